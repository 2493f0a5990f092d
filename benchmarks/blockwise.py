"""Benchmark: one block's attention and one batch's Gram products, the pieces of the full dump's cost.

Prints, for one attention shape (default ViT-S/16 at 224 px, batch 32) on the CPU:

- attention of one block: timm's fused path (``F.scaled_dot_product_attention``), timm's
  explicit path over the whole batch, and the blockwise path (``vitscope.extract.blockwise``)
  with R images per chunk (R = 1, 2, 4, 8 and the batch, plus what ``chunk_rows`` picks);
  each bare and with the attention recorders' reductions (the per-query distance, the
  float64 sums, the sink statistics: ``vitscope.extract.fused.reduce_reference`` and
  ``vitscope.extract.reductions``) on the probabilities, as the extraction runs them;
- the Gram matrices of one batch: ``vitscope.extract.reductions.minibatch_grams`` at the
  2L + L points of the pass (block outputs and LayerNorm outputs), one call per point,
  against the same float64 products stacked into one batched product, and a float32
  product for scale (what float64 costs).

Times are CPU seconds of this thread (``time.thread_time``, median of ``--repeats``), so
other jobs on a shared machine disturb them less than wall time would (caches and memory
bandwidth are still shared). Run by hand: ``python benchmarks/blockwise.py [--threads 1]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch


def seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm (allocator, kernels)
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--grid", type=int, default=14, help="tokens per side (T = grid^2 + 1)")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    from vitscope.attention import metrics
    from vitscope.extract import blockwise, fused, reductions

    torch.set_num_threads(args.threads)
    b, h, g, hd = args.batch, args.heads, args.grid, args.head_dim
    t = g * g + 1
    gen = torch.Generator().manual_seed(0)
    # q, k, v as timm makes them: views of one (B, T, 3, H, hd) projection
    qkv = torch.randn(b, t, 3, h, hd, generator=gen).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    scale = hd**-0.5
    dist = metrics.distance_matrix((g, g)).float()
    total = torch.zeros(h, g * g, g * g, dtype=torch.float64)
    zeros = torch.zeros(h, dtype=torch.int64)
    cls_sum = torch.zeros(h, t, dtype=torch.float64)
    sink_sum = torch.zeros(h, 2, dtype=torch.float64)

    def reduce(attn: torch.Tensor) -> None:
        fused.reduce_reference(attn, 1, dist, total, True, zeros)
        reductions.accumulate(cls_sum, attn[:, :, 0, :])
        reductions.accumulate(sink_sum, reductions.sink_statistics(attn, 1))
        attn[:, :, 0, :].clone()  # the CLS rows copied out (cls_attention)

    def chunked(rows: int, with_reductions: bool) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            qs = q * scale
            outs = []
            for start in range(0, b, rows):
                attn = (qs[start : start + rows] @ k[start : start + rows].transpose(-2, -1)).softmax(dim=-1)
                if with_reductions:
                    reduce(attn)
                outs.append(attn @ v[start : start + rows])
            return torch.cat(outs)

        return run

    picked = blockwise.chunk_rows(h, t, b, torch.device("cpu"))
    print(f"CPU, {args.threads} thread(s), load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"attention (B, H, T, hd) = ({b}, {h}, {t}, {hd}), CPU ms per block (median of {args.repeats})")
    fused_ms = 1e3 * seconds(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), args.repeats)
    print(f"  {'timm fused (scaled_dot_product_attention)':48s}{fused_ms:9.2f}")
    for rows, name in [(b, "explicit, whole batch (extract.attention: explicit)")] + [
        (r, f"blockwise, {r} images per chunk" + (" (chunk_rows)" if r == picked else ""))
        for r in sorted({1, 2, 4, 8, picked} - {b})
    ]:
        bare = 1e3 * seconds(chunked(rows, False), args.repeats)
        full = 1e3 * seconds(chunked(rows, True), args.repeats)
        print(f"  {name:48s}{bare:9.2f}  with the reductions {full:9.2f}  ({full / fused_ms:.2f}x fused)")

    d = h * hd
    points = 3 * args.blocks  # block outputs and the two LayerNorms of every block
    x = torch.randn(b, t, d, generator=gen) * 3 + 100  # a large mean, as real models' channels have
    grams = 1e3 * seconds(lambda: [reductions.minibatch_grams(x, b, 1) for _ in range(points)], args.repeats)
    flat = [(x.double() - x.double().mean(0))[:, 1:].flatten(1)[None] for _ in range(points)]
    stacked = torch.cat(flat)
    separate = 1e3 * seconds(lambda: [f @ f.transpose(1, 2) for f in flat], args.repeats)
    one = 1e3 * seconds(lambda: stacked @ stacked.transpose(1, 2), args.repeats)
    x32 = stacked.float()
    single = 1e3 * seconds(lambda: x32 @ x32.transpose(1, 2), args.repeats)
    print(f"Gram matrices of one batch ({b} images, {points} points, features {(t - 1) * d}), CPU ms per batch:")
    print(f"  {'minibatch_grams at every point (centring + products)':58s}{grams:9.2f}")
    print(f"  {'float64 spatial products, one per point':58s}{separate:9.2f}")
    print(f"  {'float64 spatial products, stacked into one':58s}{one:9.2f}")
    print(f"  {'float32 spatial products, stacked (for scale)':58s}{single:9.2f}")


if __name__ == "__main__":
    main()
