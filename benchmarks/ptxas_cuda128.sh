#!/usr/bin/env bash
# A ptxas for TRITON_PTXAS_PATH that runs CUDA 12.8's ptxas (Triton 3.6's) under a newer Triton, to tell its
# PTX from its ptxas (session 25: Triton 3.8's slower forwards are its PTX, not the CUDA 12.9 ptxas it ships).
#
#   PTXAS128=/path/to/triton-3.6/backends/nvidia/bin/ptxas TRITON_PTXAS_PATH=$PWD/benchmarks/ptxas_cuda128.sh \
#     python3 benchmarks/probe_hopper.py ab ...
#
# Triton 3.8 reads the ptxas version and writes PTX 8.7 for 12.8 by itself; a PTX 8.8 version line (which
# 12.8 refuses) is set back to 8.7 all the same.
set -euo pipefail
for arg in "$@"; do
  case "$arg" in *.ptx) sed -i 's/^\.version 8\.8$/.version 8.7/' "$arg" ;; esac
done
exec "${PTXAS128:?set PTXAS128 to the CUDA 12.8 ptxas}" "$@"
