#!/usr/bin/env bash
# On the GPU machine, after `source benchmarks/device_setup.sh`: the GPU-marked tests, the small-N
# out-of-bounds probe and the per-configuration accuracy probe, written to $OUT (or ./gpu-checks).
# With two GPUs the probes run on the second one while the tests run on the first.
#
#   bash benchmarks/gpu_checks.sh [pytest -k expression]
set -u
out=${OUT:-gpu-checks}
mkdir -p "$out"
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
probe_gpu=$(( gpus > 1 ? 1 : 0 ))
# Out-of-bounds probe (compute-sanitizer), then every configuration's error
# at every head dim the kernels run at (kernels/attention.py `exact_head_dim`: others are zero-padded to these).
(
  CUDA_VISIBLE_DEVICES=$probe_gpu python3 benchmarks/probe_small_n.py --n 1,2,33 --d 64 --jobs 6
  for d in 32 48 64 80 96 128; do
    CUDA_VISIBLE_DEVICES=$probe_gpu python3 benchmarks/probe_accuracy.py --n 300 --d $d
  done
) >"$out/probe.txt" 2>&1 &
probe=$!
if [ "$probe_gpu" = 0 ]; then wait "$probe"; fi
CUDA_VISIBLE_DEVICES=0 python3 -m pytest -m gpu tests -q -p no:cacheprovider -rfE ${1:+-k "$1"} \
  >"$out/gpu-tests.txt" 2>&1
status=$?
echo "gpu tests: exit $status"
tail -25 "$out/gpu-tests.txt"
if [ "$status" != 0 ]; then  # a device fault poisons the CUDA context: the rest again, in a fresh process
  CUDA_VISIBLE_DEVICES=0 python3 -m pytest -m gpu tests -q -p no:cacheprovider -rfE -k "not 1x1x1x64" \
    >"$out/gpu-tests-rest.txt" 2>&1
  echo "gpu tests without N = 1: exit $?"
  tail -25 "$out/gpu-tests-rest.txt"
fi
wait "$probe"
echo "probe:"
cat "$out/probe.txt"
