"""Benchmark: what sharding costs (docs/performance.md#sharded-extraction).

Extracts one dataset of random images unsharded and in K shards (vitscope.extract.run with
``shard``), merges the shards (vitscope.extract.merge) and prints: the seconds of the
unsharded extraction, of each shard and of the merge, the shard files' size and the merge's
rate in MB/s, the merge time against the extraction time, and whether the merged dump is
bit-identical to the unsharded one (every dataset and attribute). Images are generated in a
temporary folder. Not a test: run it by hand,
`python benchmarks/merge.py [--images 256 --shards 4 --arch test_vit --image-size 64]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--arch", default="test_vit")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--products", default="", help="comma-separated (default: extract.products' default)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import h5py
    import numpy as np
    import torch
    from PIL import Image

    from vitscope.extract import merge
    from vitscope.extract import run as extract
    from vitscope.io import datasets as data
    from vitscope.io import dumps
    from vitscope.io import preprocess as loading
    from vitscope.models import registry as models

    torch.set_num_threads(args.threads)
    spec = models.spec_from_config("bench", {"arch": args.arch, "image_size": args.image_size})
    model, _ = models.build(spec)
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    options = extract.ExtractOptions(
        batch_size=args.batch_size, cka_batch_size=min(args.batch_size, 16), exemplars=4,
        **({"products": tuple(args.products.split(","))} if args.products else {}),
    )
    meta = {"model": "bench", "dataset": "bench", **spec.describe()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        for i in range(args.images):
            folder = root / "images" / f"class_{i % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, size=(args.image_size, args.image_size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:05d}.png")
        entries = data.index_imagefolder(root / "images")

        def extract_to(path: Path, shard: tuple[int, int] | None) -> float:
            start = time.perf_counter()
            with dumps.create_file(path) as handle:
                extract.run(model, entries, transform, handle, options, torch.device("cpu"), meta, shard=shard)
            return time.perf_counter() - start

        whole = extract_to(root / "whole.h5", None)
        parts = [root / f"{k}-of-{args.shards}.h5" for k in range(1, args.shards + 1)]
        times = [extract_to(p, (k, args.shards)) for k, p in enumerate(parts, start=1)]
        start = time.perf_counter()
        merge.merge(parts, root / "merged.h5", [e.path for e in entries], [e.label for e in entries],
                    [e.cls for e in entries])
        merging = time.perf_counter() - start
        size = sum(p.stat().st_size for p in parts) / 1e6

        def items(path: Path) -> dict:
            out = {}

            def visit(name: str, obj) -> None:
                value = obj[()] if isinstance(obj, h5py.Dataset) else None
                out[name] = ({k: repr(np.asarray(v).tolist()) for k, v in obj.attrs.items()},
                             None if value is None else (np.asarray(value).dtype.str, np.asarray(value).tobytes()))

            with h5py.File(path) as handle:
                visit("/", handle)
                handle.visititems(visit)
            return out

        identical = items(root / "whole.h5") == items(root / "merged.h5")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{args.arch} at {args.image_size} px, {args.images} images, batch {args.batch_size}, "
          f"products {','.join(options.products)}")
    print(f"unsharded extraction: {whole:.2f} s")
    print(f"{args.shards} shards: {', '.join(f'{t:.2f}' for t in times)} s (sum {sum(times):.2f} s)")
    print(f"merge: {merging:.2f} s for {size:.1f} MB of shard files ({size / merging:.1f} MB/s), "
          f"{merging / whole:.1%} of the unsharded extraction")
    print(f"merged dump bit-identical to the unsharded one: {identical}")


if __name__ == "__main__":
    main()
