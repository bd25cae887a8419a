#!/usr/bin/env bash
# Train the bundled default model (pathoflash/model/default/) on one GPU; see its MODEL_CARD.md.
#
#   bash benchmarks/train_default_model.sh OUT_DIR
#
# Generates 48 training + 6 held-out synthetic slides (8192 × 8192 px at 0.25 µm/px, seeds 1000–1053) with
# 16 processes, trains a ViT (width 192, depth 4, 3 heads, patch 16, 1024-px regions at 0.5 µm/px; dense head
# with 64 hidden units) and scores it on the held-out slides. The model is saved after every epoch, so a run
# cut short still leaves one.
set -euo pipefail
out=${1:?usage: train_default_model.sh OUT_DIR}
mkdir -p "$out"
# Attention runs on PathoFlash's Triton kernel (forward and backward); should it fail its check, fall back to SDPA.
backend=auto
python3 - <<'PY' || backend=sdpa
import torch
from pathoflash.kernels import flash_attention

q, k, v = (torch.randn(2, 3, 4096, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
out = flash_attention(q, k, v)
out.float().square().sum().backward()
ref = torch.nn.functional.scaled_dot_product_attention(*(t.detach().float() for t in (q, k, v)))
err = (out.float() - ref).abs().max().item()
assert err < 0.05 and all(torch.isfinite(t.grad).all() for t in (q, k, v)), err
print(f"triton kernel forward+backward ok (max abs error {err:.4f} vs fp32 SDPA)")
PY
echo "attention backend: $backend"
python3 -m pathoflash -v train \
  --out "$out/model.safetensors" --name pathoflash-default \
  --synthetic 48 --val-synthetic 6 --synthetic-size 8192x8192 --synthetic-mpp 0.25 --seed 1000 \
  --synthetic-dir "${SYNTHETIC_DIR:-/tmp/pathoflash-synthetic}" \
  --width 192 --depth 4 --heads 3 --patch 16 --head-hidden 64 --region 1024 --mpp 0.5 --backend "$backend" \
  --epochs 8 --steps 375 --batch-size 16 --lr 1e-3 --workers 16 --device cuda --time-limit 260 \
  2>&1 | tee "$out/train.log"
