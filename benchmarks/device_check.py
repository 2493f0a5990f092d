"""Extraction on an accelerator against the CPU: every dump dataset, max |difference|.

Run on a machine with CUDA: `python benchmarks/device_check.py [--arch vit_small_patch16_224]`.
Prints one line per dataset of the dump; attention and tokens should agree to
float32 tolerance (the GPU's fused/explicit kernels differ in rounding only).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

from vitscope.extract import run as extract
from vitscope.io import datasets as data
from vitscope.io import preprocess as loading
from vitscope.io import synthetic
from vitscope.models import registry as models


def dump(root: Path, arch: str, device: str, out: Path) -> None:
    spec = models.spec_from_config("check", {"arch": arch, "image_size": 224})
    model, _ = models.build(spec)
    entries = data.index_imagefolder(root / "images")
    options = extract.ExtractOptions(batch_size=16, cka_batch_size=16, exemplars=2, num_workers=2)
    with h5py.File(out, "w") as handle:
        summary = extract.run(
            model, entries, loading.preprocess(spec.image_size, spec.mean, spec.std), handle, options,
            torch.device(device), {"model": "check"},
        )
    print(f"{device}: {summary['images_per_second']:.1f} images/s, parity {summary['parity_max_abs_diff']:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="vit_small_patch16_224")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthetic.write_imagefolder(root, synthetic.SyntheticSpec(classes=4, per_class=12, image_size=160))
        dump(root, args.arch, "cpu", root / "cpu.h5")
        dump(root, args.arch, "cuda", root / "cuda.h5")
        with h5py.File(root / "cpu.h5") as a, h5py.File(root / "cuda.h5") as b:
            names: list[str] = []
            a.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
            for name in names:
                x, y = a[name][...], b[name][...]
                if x.dtype.kind in "fi":
                    diff = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) if x.size else 0.0
                    scale = float(np.max(np.abs(x))) if x.size else 0.0
                    print(f"{name:32s} max|cpu-cuda| {diff:.3e}  (max|cpu| {scale:.3e})")
                else:
                    print(f"{name:32s} equal: {bool(np.array_equal(x, y))}")


if __name__ == "__main__":
    main()
