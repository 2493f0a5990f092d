#!/usr/bin/env bash
# ViT-B/16 on one CUDA GPU at every precision, in one run (docs/performance.md): the bare
# fused forward and the full dump (blockwise and explicit attention) at fp32, tf32, bf16 and fp16 side by side, then the errors
# the dumps record. About 4 minutes on an H100 or H200 (2048 images per measurement).
# Run from anywhere: bash benchmarks/gpu_precision.sh (PYTHON names the interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$python" benchmarks/extract.py --arch vit_base_patch16_224 --device cuda --n 256 --batch-size 64 \
    --workers 6 --threads 4 --precisions fp32,tf32,bf16,fp16 --explicit
"$python" benchmarks/precision_errors.py --device cuda --large --precisions tf32,bf16,fp16
