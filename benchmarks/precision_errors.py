"""The errors a dump records at each precision (``extract.precision``), for a few models.

For each model and precision, extracts one batch of synthetic images with every
default product (``vitscope.extract.run``: the batch once in the precision, once
in fp32) and prints the recorded errors (docs/dumps.md#precision): per dataset,
max |x - x_fp32| and that relative to max |x_fp32|, as one markdown table per model.

Models: timm ``test_vit`` at 64 px, the demo's architecture (docs/demo.md) with its
seeded initialisation, the stress model (``vitscope.testing.stress``); with
``--demo DIR``, the demo's trained models (``config.yaml``'s models, their checkpoints
read from DIR, e.g. ``results/checkpoints`` after a demo run); with ``--large``,
ViT-B/16 at 224 px with random weights. Not a test: run it by hand,
`python benchmarks/precision_errors.py [--demo results/checkpoints] [--large] [--device cuda]`.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import h5py
import torch

from vitscope.extract import run as extract
from vitscope.io import datasets as data
from vitscope.io import preprocess as loading
from vitscope.io import synthetic
from vitscope.models import registry as models
from vitscope.testing import stress

MODELS = {
    "test_vit (64 px)": {"arch": "test_vit", "image_size": 64},
    "demo architecture (64 px, seeded init)": {
        "arch": "vit_small_patch8_224", "image_size": 64, "seed": 0,
        "model_kwargs": {"embed_dim": 96, "depth": 4, "num_heads": 3},
    },
    "stress model (64 px)": None,
}
LARGE = {"ViT-B/16 (224 px, random weights)": {"arch": "vit_base_patch16_224", "image_size": 224, "seed": 0}}


def demo_models(folder: Path) -> dict[str, dict]:
    """The demo's models (``config.yaml``) with a checkpoint, read from ``folder``."""
    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    out = {}
    for alias, entry in config["models"].items():
        file = folder / Path(entry.get("checkpoint", "")).name
        if entry.get("weights") == "checkpoint" and file.is_file():
            out[f"demo `{alias}` (its checkpoint)"] = {
                **{k: v for k, v in entry.items() if k != "train"}, "checkpoint": str(file),
            }
    return out


def errors_of(entry: dict | None, entries: list[data.Entry], precision: str, device: torch.device, batch: int) -> dict:
    if entry is None:
        spec = models.spec_from_config("stress", {**stress.MODEL_ENTRY, "weights": "random"})
        model = stress.stress_vit()
    else:
        spec = models.spec_from_config("model", entry)
        model, _ = models.build(spec)
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    options = extract.ExtractOptions(batch_size=batch, cka_batch_size=batch, exemplars=1, precision=precision)
    with tempfile.TemporaryDirectory() as tmp, h5py.File(Path(tmp) / "d.h5", "w") as handle:
        summary = extract.run(model, entries, transform, handle, options, device, {"model": "model"})
    return summary["precision_errors"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8, help="images of the batch compared")
    parser.add_argument("--precisions", default="tf32,bf16,fp16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--large", action="store_true", help="also ViT-B/16 at 224 px")
    parser.add_argument("--demo", type=Path, metavar="DIR", help="also the demo's models, checkpoints from DIR")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precisions = args.precisions.split(",")
    print(f"machine: {platform.processor() or platform.machine()}, device {device}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as root:
        synthetic.write_imagefolder(root, synthetic.SyntheticSpec(classes=4, per_class=2, image_size=256))
        found = data.index_imagefolder(Path(root) / "images")
        entries = [found[i % len(found)] for i in range(args.batch_size)]
        chosen = {**MODELS, **(demo_models(args.demo) if args.demo else {}), **(LARGE if args.large else {})}
        for name, entry in chosen.items():
            table = {p: errors_of(entry, entries, p, device, args.batch_size) for p in precisions}
            names = sorted(set().union(*table.values()))
            print(f"\n{name}: max abs error / max relative error (to max |fp32|), first batch of {args.batch_size}")
            print("| dataset | " + " | ".join(precisions) + " |")
            print("|---|" + "---|" * len(precisions))
            for key in names:
                cells = [f"{table[p][key][0]:.2g} / {table[p][key][1]:.2g}" if key in table[p] else "" for p in
                         precisions]
                print(f"| `{key}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
