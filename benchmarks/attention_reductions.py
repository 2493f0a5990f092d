"""Benchmark: the per-block attention reductions of extraction, fused kernel against torch.

For one block's attention probabilities (B, H, T, T) (random softmax rows, float32)
times :func:`vitscope.extract.fused.reduce_reference` (torch: slice, row sums, division,
product with the distance matrix, float64 sum over images) and
:func:`vitscope.extract.fused.reduce_spatial` (one Triton kernel on CUDA), prints ms per
block, the effective bandwidth and the largest differences between the two.
Not a test: `python benchmarks/attention_reductions.py --device cuda`.
"""

from __future__ import annotations

import argparse
import time

import torch

from vitscope.attention import metrics as attention
from vitscope.extract import fused


def timed(fn, device: torch.device, repeat: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeat`` runs after three warm-ups."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--grid", type=int, default=14, help="square grid side (B/16 at 224 px: 14)")
    parser.add_argument("--prefix", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    grid = (args.grid, args.grid)
    g = args.grid**2
    t = g + args.prefix
    attn = torch.softmax(torch.randn(args.batch, args.heads, t, t, device=device) * 4, dim=-1)
    dist = attention.distance_matrix(grid, device=device).float()
    total_ref = torch.zeros(args.heads, g, g, dtype=torch.float64, device=device)
    total_ker = torch.zeros_like(total_ref)
    if args.prefix:  # a few queries with all of their mass on CLS: zero-mass rows (docs/attention.md)
        attn[:, :, args.prefix :: 7, : args.prefix] = 0.0
        attn[:, :, args.prefix :: 7, 0] = 1.0
        attn[:, :, args.prefix :: 7, args.prefix :] = 0.0
    zeros_ref = torch.zeros(args.heads, dtype=torch.int64, device=device)
    zeros_ker = torch.zeros_like(zeros_ref)
    ref = fused.reduce_reference(attn, args.prefix, dist, total_ref, True, zeros_ref)
    ker = fused.reduce_spatial(attn, args.prefix, dist, total_ker, True, zeros_ker)
    print(f"device {device}, attention {tuple(attn.shape)} float32, fused kernel: {fused.available(device)}")
    print(f"max |distance ref - fused| = {(ref - ker).nan_to_num().abs().max().item():.3g}")
    print(f"zero-mass rows ref / fused = {zeros_ref.sum().item()} / {zeros_ker.sum().item()}, "
          f"same NaN rows: {torch.equal(ref.isnan(), ker.isnan())}")
    print(f"max |sum ref - fused|      = {(total_ref - total_ker).abs().max().item():.3g}")
    spatial_bytes = args.batch * args.heads * g * g * 4
    rows = []
    for name, fn in (
        ("torch reference", lambda: fused.reduce_reference(attn, args.prefix, dist, total_ref, True, zeros_ref)),
        ("fused (one pass)", lambda: fused.reduce_spatial(attn, args.prefix, dist, total_ker, True, zeros_ker)),
    ):
        ms = timed(fn, device, args.repeat)
        rows.append((name, ms))
        print(f"{name:20s} {ms:8.3f} ms/block  {spatial_bytes / ms / 1e6:8.1f} GB/s of spatial attention read")
    print(f"speed-up fused / reference: {rows[0][1] / rows[1][1]:.2f}x")


if __name__ == "__main__":
    main()
