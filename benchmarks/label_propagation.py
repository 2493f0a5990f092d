"""Label propagation, one step: the vectorised `vitscope.tasks.davis.evaluation.propagate` against a
straightforward per-target-token loop (the same result; see tests/test_davis.py for the float64
reference). Default size: the study's DAVIS setting for a B/16 (448 x 784 frames -> 28 x 49 tokens,
width 768, the first frame + 7 context frames, radius 12, top-5, 3 channels).

    python benchmarks/label_propagation.py [--device cuda] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from vitscope.tasks.davis import evaluation as davis


def loop_propagate(target, sources, labels, temperature, topk, grid, radius):
    """Per target token: affinities to the sources of its window in every context frame, top-k, weighted labels."""
    gh, gw = grid
    s = sources.shape[0]
    out = torch.zeros(labels.shape[1], gh * gw, dtype=target.dtype, device=target.device)
    src = sources.reshape(s, gh, gw, -1)
    lab = labels.reshape(s, labels.shape[1], gh, gw)
    for t in range(gh * gw):
        i, j = divmod(t, gw)
        r0, r1, c0, c1 = max(0, i - radius), min(gh, i + radius + 1), max(0, j - radius), min(gw, j + radius + 1)
        window = src[:, r0:r1, c0:c1].reshape(-1, src.shape[-1])
        aff = torch.exp(window @ target[t] / temperature)
        values, index = torch.topk(aff, min(topk, aff.numel()))
        kept = aff >= values[-1]
        weights = torch.where(kept, aff, torch.zeros_like(aff))
        weights = weights / weights.sum()
        out[:, t] = lab[:, :, r0:r1, c0:c1].permute(1, 0, 2, 3).reshape(lab.shape[1], -1) @ weights
    return out


def timed(fn, repeats, device):
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def measure(grid=(28, 49), dim=768, context=8, classes=3, radius=12, topk=5, repeats=3, device="cpu") -> dict:
    """Best-of-``repeats`` seconds of the vectorised kernel and of the loop, and their largest difference."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    g = grid[0] * grid[1]
    target = davis.normalize(torch.randn(g, dim, generator=gen)).to(device)
    sources = davis.normalize(torch.randn(context, g, dim, generator=gen)).to(device)
    labels = torch.softmax(torch.randn(context, classes, g, generator=gen), dim=1).to(device)
    mask = davis.neighbourhood(tuple(grid), radius, device=device)
    fast_s, fast = timed(lambda: davis.propagate(target, sources, labels, 0.1, topk, mask), repeats, device)
    loop_s, slow = timed(
        lambda: loop_propagate(target, sources, labels, 0.1, topk, tuple(grid), radius), repeats, device
    )
    return {"vectorised_s": fast_s, "loop_s": loop_s, "max_abs_diff": float((fast - slow).abs().max())}


def benchmark(quick: bool = False) -> list[tuple[str, float, str, str]]:
    """Rows for benchmarks/suite.py: (what, value, unit, note)."""
    grid = (14, 25) if quick else (28, 49)
    r = measure(grid=grid, repeats=1 if quick else 3)
    note = f"grid {grid[0]}x{grid[1]}, D 768, 8 context frames, radius 12, top-5, {torch.get_num_threads()} thread(s)"
    return [
        ("label propagation, vectorised, per frame and block", r["vectorised_s"] * 1e3, "ms", note),
        ("label propagation, loop over target tokens", r["loop_s"] * 1e3, "ms", note),
        ("ratio loop / vectorised", r["loop_s"] / r["vectorised_s"], "x", f"max |difference| {r['max_abs_diff']:.1e}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", type=int, nargs=2, default=[28, 49])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--context", type=int, default=8, help="context frames (first + previous)")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--radius", type=int, default=12)
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    r = measure(tuple(args.grid), args.dim, args.context, args.classes, args.radius, args.topk, args.repeats,
                args.device)
    print(f"grid {args.grid[0]}x{args.grid[1]}, D {args.dim}, {args.context} context frames, radius {args.radius}, "
          f"top-{args.topk}, {args.classes} channels, {args.device}, {args.threads} thread(s)")
    print(f"vectorised: {r['vectorised_s'] * 1000:.1f} ms per frame and block")
    print(f"loop:       {r['loop_s'] * 1000:.1f} ms per frame and block")
    print(f"ratio loop / vectorised: {r['loop_s'] / r['vectorised_s']:.1f}x; max |difference| {r['max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
