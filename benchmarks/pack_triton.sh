#!/usr/bin/env bash
# Pack a Triton release small enough for the device tool's 64 MiB carry, to run the kernels on the GPU
# machine under another Triton than its own 3.6 (its Python is 3.12; its torch stays 2.11).
#
#   bash benchmarks/pack_triton.sh 3.8.0            # writes .whl/triton-3.8.0-py312.tar.xz (~52 MB)
#   # on the device, with .whl in the run's carry:
#   python3 -c "import tarfile; tarfile.open('.whl/triton-3.8.0-py312.tar.xz').extractall('/tmp/t')"
#   TRITON_BACKENDS_IN_TREE=1 PYTHONPATH=/tmp/t:$PYTHONPATH python3 -m pytest tests/test_flash_attention_gpu.py \
#     -k "not torch_compile"
#
# The wheel is ~250 MB. What goes: debug symbols of libtriton.so (505 → 192 MB), the profiler (libproton,
# CUPTI), the Blackwell ptxas, the instrumentation and plugin libraries, FileCheck, and the AMD backend
# (3.9's alone is 101 MB); what is left compiles and launches every kernel here (session 20). Without the AMD
# backend Triton must find its backends by directory, not by the installed packages' entry points (the device's
# own Triton lists AMD there): hence TRITON_BACKENDS_IN_TREE=1, which Triton 3.6 and newer read.
# Triton 3.9 compiles sm_90 with ptxas-blackwell, which goes too (52 MB): point it at the legacy ptxas that
# stays, TRITON_PTXAS_BLACKWELL_PATH=/tmp/t/triton/backends/nvidia/bin/ptxas (session 24; without it every
# compile fails "Cannot find ptxas-blackwell").
# torch.compile does not work with it (torch 2.11's Inductor expects its own Triton), hence
# `-k "not torch_compile"`.
set -euo pipefail
version=${1:?usage: pack_triton.sh VERSION}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_28_x86_64 "triton==$version" -d "$work"
mkdir "$work/tree"
(cd "$work/tree" && python3 -m zipfile -e "$work"/triton-*.whl .)
cd "$work/tree"
rm -rf triton/backends/nvidia/lib/cupti triton/backends/nvidia/lib/cupti-blackwell \
  triton/backends/nvidia/bin/ptxas-blackwell triton/instrumentation triton/plugins triton/FileCheck \
  triton/_C/libproton.so triton/backends/amd
strip --strip-unneeded triton/_C/libtriton.so
chmod +x triton/backends/nvidia/bin/*
cd - >/dev/null
mkdir -p .whl
tar -C "$work/tree" -cf - . | xz -6 -T0 >".whl/triton-$version-py312.tar.xz"
ls -l ".whl/triton-$version-py312.tar.xz"
