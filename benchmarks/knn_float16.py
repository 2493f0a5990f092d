"""The k-NN error of float16 token storage (``datasets.<name>.token_dtype: float16``): the neighbours of
a float16 bank and query set against float32, on random features and on a test_vit dump.

Reported per feature set: the share of queries whose top-1 neighbour is the same, the mean overlap of the
top-k neighbour sets (|A ∩ B| / k), the largest difference of a neighbour's similarity at the same rank,
and the weighted k-NN accuracy (DINO protocol, vitscope.tasks.knn) in both dtypes.

    python benchmarks/knn_float16.py [--n 20000] [--queries 2000] [--dim 384] [--images 600]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitscope.extract import run as extract
from vitscope.io import datasets as data
from vitscope.io import dumps
from vitscope.io import preprocess as loading
from vitscope.models import registry as models
from vitscope.tasks import knn

KS = (1, 20, 200)


def compare(name: str, bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray,
            classes: int) -> None:
    """bank (N, L, D), queries (M, L, D) float32; prints float16 against float32 per block."""
    k = min(max(KS), bank.shape[0])
    s32, i32 = knn.nearest_blocks(bank, queries, k)
    s16, i16 = knn.nearest_blocks(bank.astype(np.float16), queries.astype(np.float16), k)
    for block in range(bank.shape[1]):
        top1 = float((i32[block, :, 0] == i16[block, :, 0]).mean())
        overlaps = []
        for kk in (20, k):
            shared = [len(np.intersect1d(a[:kk], b[:kk], assume_unique=True)) / kk
                      for a, b in zip(i32[block], i16[block], strict=True)]
            overlaps.append(f"top-{kk} overlap {np.mean(shared):.4f}")
        diff = float(np.abs(s32[block] - s16[block]).max())
        acc = [knn.accuracy(s, i, bank_labels, query_labels, classes, (20,))[20]["top1"]
               for s, i in ((s32[block], i32[block]), (s16[block], i16[block]))]
        print(f"{name} block {block + 1}: top-1 neighbour same {top1:.4f}, {', '.join(overlaps)}, "
              f"max |sim32 - sim16| {diff:.2e}, 20-NN top-1 accuracy {acc[0]:.4f} (float32) {acc[1]:.4f} (float16)")


def test_vit_tokens(root: Path, images: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """tokens/cls (N, L, D) of a random-init timm test_vit over ``images`` synthetic images of ``classes``
    classes (each class a colour plus noise), extracted as the workflow does; and the labels."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        colour = rng.integers(0, 256, 3)
        for i in range(images // classes):
            noise = rng.normal(0, 60, (64, 64, 3))
            pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class_{c}/img_{i}.png")
    entries = data.index_imagefolder(root)
    spec = models.spec_from_config("test_vit", {"arch": "test_vit", "image_size": 64})
    model, _ = models.build(spec)
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    with dumps.create_file(root / "d.h5") as handle:
        extract.run(model, entries, transform, handle, extract.ExtractOptions(products=("tokens",), batch_size=32),
                    torch.device("cpu"), {"model": "test_vit", "dataset": "synthetic"})
    import h5py

    with h5py.File(root / "d.h5") as f:
        return f["tokens/cls"][...], f["images/label"][...]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--images", type=int, default=600, help="test_vit dump images (half bank, half queries)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    classes = 10
    bank = rng.standard_normal((args.n, 1, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, 1, args.dim), dtype=np.float32)
    compare("random", bank, rng.integers(0, classes, args.n), queries, rng.integers(0, classes, args.queries),
            classes)
    with tempfile.TemporaryDirectory() as tmp:
        tokens, labels = test_vit_tokens(Path(tmp), args.images, classes)
    bank_rows, query_rows = np.arange(0, len(labels), 2), np.arange(1, len(labels), 2)
    compare("test_vit", tokens[bank_rows], labels[bank_rows], tokens[query_rows], labels[query_rows], classes)


if __name__ == "__main__":
    main()
