"""Benchmark: full extraction against a bare fused forward, and memory against N.

Prints, for one model and batch size:
- images/s of the full extraction (every product, HDF5 writes included) and of
  a bare fused ``forward_features`` over the same DataLoader at 8N images, and
  their ratio; also the model alone on one preloaded batch, for context;
- peak resident memory (and peak CUDA memory) of the extraction at N and 8N images.

Each measurement runs in a fresh subprocess so peaks do not mix. Synthetic
images are generated in a temporary folder (at most 1024 distinct ones, cycled).
The DataLoader keeps workers x 2 batches in flight, so N should be well above
workers x 2 x batch for the memory comparison to measure steady state.
Not a test: run it by hand,
`python benchmarks/extract.py [--arch vit_small_patch16_224 --device cpu]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(args: argparse.Namespace) -> None:
    import h5py
    import torch
    from torch.utils.data import DataLoader

    from vitscope import data, extract, models

    torch.set_num_threads(args.threads)
    waits: dict = {}
    spec = models.spec_from_config("bench", {"arch": args.arch, "image_size": args.image_size})
    model, _ = models.build(spec)
    device = torch.device(args.device)
    distinct = data.index_imagefolder(Path(args.root) / "images")
    entries = [distinct[i % len(distinct)] for i in range(args.n)]
    transform = data.preprocess(spec.image_size, spec.mean, spec.std)
    products = tuple(args.products.split(",")) if args.products else extract.DEFAULT_PRODUCTS
    options = extract.ExtractOptions(
        products=products, batch_size=args.batch_size, cka_batch_size=args.batch_size,
        num_workers=args.workers, exemplars=4,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if args.mode == "model":
        model = model.to(device).eval()
        models.set_fused_attention(model, True)
        batch = torch.stack([transform(data.load_image(e.path)) for e in entries[: args.batch_size]]).to(device)
        with torch.inference_mode():
            for _ in range(3):
                model.forward_features(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.n // args.batch_size):
                model.forward_features(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        entries = entries[: (args.n // args.batch_size) * args.batch_size]
    elif args.mode == "bare":
        model = model.to(device).eval()
        models.set_fused_attention(model, True)
        loader = DataLoader(
            data.ImageDataset(entries, transform, extract.image_order(len(entries), options)),
            batch_size=args.batch_size, num_workers=args.workers, pin_memory=device.type == "cuda",
        )
        start = time.perf_counter()
        with torch.inference_mode():
            for images, _ in loader:
                model.forward_features(images.to(device, non_blocking=True))
            if device.type == "cuda":
                torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    else:
        with tempfile.TemporaryDirectory() as tmp, h5py.File(Path(tmp) / "d.h5", "w") as handle:
            summary = extract.run(model, entries, transform, handle, options, device, {"model": "bench"})
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = summary["seconds"]
            waits = summary["waits"]
    result = {
        "seconds": seconds,
        "images_per_second": len(entries) / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0,
        "waits": waits if args.mode == "full" else {},
    }
    print(json.dumps(result))


def measure(
    args: argparse.Namespace, root: str, mode: str, n: int, products: str = "", env: dict | None = None
) -> dict:
    cmd = [
        sys.executable, __file__, "--child", "--mode", mode, "--n", str(n), "--root", root,
        "--arch", args.arch, "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
        "--device", args.device, "--workers", str(args.workers), "--threads", str(args.threads),
        "--products", products,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})}).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="vit_small_patch16_224")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n", type=int, default=128, help="images of the smaller run (the larger has 8x)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--ablation", action="store_true", help="also time extraction at 8N with subsets of the products"
    )
    parser.add_argument(
        "--variants", action="store_true",
        help="also time the full extraction at 8N with the torch attention reductions (VITSCOPE_FUSED=0)",
    )
    parser.add_argument("--products", default="", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--root", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from vitscope import synthetic

    with tempfile.TemporaryDirectory() as root:
        large = 8 * args.n
        per_class = max(1, min(large, 1024) // 8)
        synthetic.write_imagefolder(root, synthetic.SyntheticSpec(classes=8, per_class=per_class, image_size=256))
        measure(args, root, "bare", args.batch_size)  # warm caches (disk, allocator) once
        alone = measure(args, root, "model", large)
        bare = measure(args, root, "bare", large)
        full = measure(args, root, "full", args.n)
        full_large = measure(args, root, "full", large)
        ablation = {
            products: measure(args, root, "full", large, products)
            for products in (
                ("tokens", "tokens,cls_attention", "tokens,cls_attention,distance,attention_sums,exemplars")
                if args.ablation else ()
            )
        }
        if args.ablation or args.variants:  # the same full extraction with the previous implementations
            ablation["all, torch reductions (VITSCOPE_FUSED=0)"] = measure(
                args, root, "full", large, "", {"VITSCOPE_FUSED": "0"}
            )
    print(f"machine: {platform.processor() or platform.machine()}, device {args.device}, {args.threads} threads")
    print(f"model: {args.arch} at {args.image_size}px, batch {args.batch_size}, {args.workers} loader workers")
    print(f"{'':70s}{'images/s':>10s}{'peak RSS MiB':>14s}{'peak CUDA MiB':>15s}")
    rows = (
        ("model alone, one preloaded batch", alone),
        (f"bare fused forward, N={large}", bare),
        (f"full extraction, N={args.n}", full),
        (f"full extraction, N={large}", full_large),
    )
    rows += tuple((f"  products {p}", r) for p, r in ablation.items())
    for name, r in rows:
        print(f"{name:70s}{r['images_per_second']:10.2f}{r['peak_rss_mib']:14.0f}{r['peak_cuda_mib']:15.0f}")
    for name, r in rows[2:]:
        if r["waits"]:
            w = r["waits"]
            print(f"{name.strip():70s} waited {w['loader']:.2f} s for images, {w['device']:.2f} s for device copies, "
                  f"{w['writer']:.2f} s for writes, of {r['seconds']:.2f} s")
    ratio = full_large["images_per_second"] / bare["images_per_second"]
    print(f"ratio full / bare images/s at N={large}: {ratio:.3f} (target >= 0.85)")
    rss = full_large["peak_rss_mib"] / full["peak_rss_mib"]
    print(f"peak RSS at {large} / at {args.n} images: {rss:.3f} (target <= 1.1)")
    if args.device.startswith("cuda"):
        print(f"peak CUDA at {large} / at {args.n} images: {full_large['peak_cuda_mib'] / full['peak_cuda_mib']:.3f}")


if __name__ == "__main__":
    main()
