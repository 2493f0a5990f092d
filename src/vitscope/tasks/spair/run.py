"""SPair-71k keypoint transfer of every block of one model (docs/downstream.md).

The model is built exactly as extraction builds it (:mod:`vitscope.models.registry`,
same checkpoint formats and provenance, logged); the canvas is the model's
input size unless another letterbox size is given (the model is then built
for that size, its position embedding resampled as for any checkpoint). Each
image is letterboxed and run once per chunk of pairs, every block's spatial
tokens recorded by forward hooks in one pass; the scoring is
:mod:`vitscope.tasks.spair.metric`.

Memory: pairs are processed per category in chunks holding at most
``max_images`` distinct images, so at most max_images x L x gh x gw x D
floats are held (an image shared by two chunks is run twice; results are
the same).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2 as T

from ...errors import ConfigError
from ...io.datasets import load_image
from ...models.registry import Geometry, geometry, set_fused_attention
from . import metric as spair
from .data import Pair

log = logging.getLogger(__name__)

COLUMNS = ("model", "block", "metric", "alpha", "categories", "keypoints", "value", "note", "chance", "pairs")
CATEGORY_COLUMNS = ("model", "block", "category", "alpha", "pairs", "keypoints", "correct", "value", "note", "chance")
#: ``note`` of a category with no keypoint visible in both images of any pair (PCK NaN, left out of the mean)
EMPTY_CATEGORY = "undefined: no keypoint (empty category)"
#: ``note`` of a mean over categories when no category has a keypoint
NO_KEYPOINT = "undefined: no category has a keypoint"
RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
              "nearest": Image.Resampling.NEAREST}


def letterbox_image(image: Image.Image, box: spair.Letterbox, interpolation: str = "bicubic") -> Image.Image:
    """The image resized to ``box.resized`` and pasted at ``box.offset`` on a black (h, w) canvas."""
    canvas = Image.new("RGB", (box.canvas[1], box.canvas[0]))
    canvas.paste(image.convert("RGB").resize(box.resized, RESAMPLING[interpolation]), box.offset)
    return canvas


def to_tensor(mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """PIL image -> normalised (3, h, w) float32 tensor (the model's normalisation)."""
    return T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))])


def block_tokens(model: nn.Module, images: torch.Tensor, geom: Geometry) -> torch.Tensor:
    """(B, 3, h, w) -> (B, L, gh, gw, D) spatial tokens of every block output, one forward pass."""
    outputs: list[torch.Tensor] = []

    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        outputs.append(output[:, geom.prefix :].float())

    handles = [block.register_forward_hook(hook) for block in model.blocks]
    try:
        with torch.inference_mode():
            model.forward_features(images)
    finally:
        for handle in handles:
            handle.remove()
    if len(outputs) != geom.blocks:
        raise RuntimeError(f"expected {geom.blocks} block outputs, the hooks saw {len(outputs)}")
    b = images.shape[0]
    return torch.stack(outputs, 1).reshape(b, geom.blocks, geom.grid[0], geom.grid[1], geom.width)


def chunks(pairs: Sequence[Pair], max_images: int) -> Iterator[list[Pair]]:
    """Consecutive runs of ``pairs`` that need at most ``max_images`` distinct images (at least one pair)."""
    run: list[Pair] = []
    images: set[str] = set()
    for pair in pairs:
        new = images | {pair.source, pair.target}
        if run and len(new) > max_images:
            yield run
            run, new = [], {pair.source, pair.target}
        run.append(pair)
        images = new
    if run:
        yield run


@dataclasses.dataclass
class _Tally:
    correct: np.ndarray  # (L, A) int64
    keypoints: int = 0
    pairs: int = 0
    chance: np.ndarray | None = None  # (A,) float64: the sum over keypoints of spair.chance


def evaluate(
    model: nn.Module,
    pairs: Mapping[str, Sequence[Pair]],
    canvas: tuple[int, int],
    transform: T.Compose,
    alphas: Sequence[float] = spair.ALPHAS,
    interpolation: str = "bicubic",
    renormalize: bool = False,
    batch_size: int = 16,
    max_images: int = 64,
    device: torch.device | None = None,
) -> dict[str, _Tally]:
    """Correct-keypoint counts per category, block and alpha for the chosen ``pairs``."""
    device = device or torch.device("cpu")
    geom = geometry(model)
    if (geom.grid[0] * geom.patch[0], geom.grid[1] * geom.patch[1]) != tuple(canvas):
        log.info("canvas %s is covered by a %s token grid of patch %s", canvas, geom.grid, geom.patch)
    model = model.to(device).eval()
    set_fused_attention(model, True)
    tallies: dict[str, _Tally] = {}
    for category, chosen in pairs.items():
        tally = tallies[category] = _Tally(np.zeros((geom.blocks, len(alphas)), dtype=np.int64),
                                           chance=np.zeros(len(alphas), dtype=np.float64))
        for run in chunks(chosen, max_images):
            paths = list(dict.fromkeys(p for pair in run for p in (pair.source, pair.target)))
            boxes: dict[str, spair.Letterbox] = {}
            tensors = []
            for path in paths:
                image = load_image(path)
                boxes[path] = spair.letterbox(image.width, image.height, canvas)
                tensors.append(transform(letterbox_image(image, boxes[path], interpolation)))
            features = torch.cat([
                block_tokens(model, torch.stack(tensors[i : i + batch_size]).to(device), geom).cpu()
                for i in range(0, len(tensors), batch_size)
            ]).numpy()
            where = {path: i for i, path in enumerate(paths)}
            for pair in run:
                visible = pair.visible
                src_box, trg_box = boxes[pair.source], boxes[pair.target]
                points = src_box.points(pair.source_points[visible])
                truth = trg_box.points(pair.target_points[visible])
                size = trg_box.box(pair.target_box)
                tally.pairs += 1
                tally.keypoints += int(visible.sum())
                if not visible.any():
                    continue
                tally.chance += spair.chance(truth, size, canvas, alphas).sum(axis=1)
                for block in range(geom.blocks):
                    pred = spair.transfer(
                        features[where[pair.source], block], features[where[pair.target], block], points, canvas,
                        renormalize,
                    )
                    tally.correct[block] += spair.correct(pred, truth, size, alphas).sum(axis=1)
        log.info("%s: %d pairs, %d keypoints", category, tally.pairs, tally.keypoints)
    return tallies


def result_rows(
    tallies: Mapping[str, _Tally], model: str, alphas: Sequence[float]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows of COLUMNS: the mean over categories per block and alpha; rows of CATEGORY_COLUMNS).

    A category without keypoints has NaN PCK with ``note`` :data:`EMPTY_CATEGORY` and is left
    out of the mean (whose ``categories`` counts those kept); a mean with no category left is
    NaN with ``note`` :data:`NO_KEYPOINT`. Both are logged as warnings. ``chance`` is the PCK
    of a uniformly random canvas pixel (:func:`vitscope.tasks.spair.metric.chance`), pooled and
    averaged over the same categories (NaN when a tally has none); ``pairs`` counts the pairs.
    """
    blocks = next(iter(tallies.values())).correct.shape[0] if tallies else 0
    empty = sorted(c for c, t in tallies.items() if t.keypoints == 0)
    if empty:
        log.warning("SPair of %s: categories %s have no keypoint; their PCK is NaN and left out of the mean",
                    model, ", ".join(empty))
    chance_counts = {c: t.chance if t.chance is not None else np.full(len(alphas), np.nan)
                     for c, t in tallies.items()}
    chance_per, chance_mean = spair.category_means(chance_counts, {c: t.keypoints for c, t in tallies.items()})
    pairs = sum(t.pairs for t in tallies.values())
    rows, per_category = [], []
    for block in range(blocks):
        counts = {c: t.correct[block] for c, t in tallies.items()}
        keypoints = {c: t.keypoints for c, t in tallies.items()}
        per, mean = spair.category_means(counts, keypoints)
        kept = sum(k > 0 for k in keypoints.values())
        for a, alpha in enumerate(alphas):
            rows.append({"model": model, "block": block + 1, "metric": "PCK", "alpha": float(alpha),
                         "categories": kept, "keypoints": sum(keypoints.values()), "value": float(mean[a]),
                         "note": "" if kept else NO_KEYPOINT, "chance": float(chance_mean[a]), "pairs": pairs})
            per_category += [
                {"model": model, "block": block + 1, "category": c, "alpha": float(alpha), "pairs": t.pairs,
                 "keypoints": t.keypoints, "correct": int(t.correct[block, a]), "value": float(per[c][a]),
                 "note": "" if t.keypoints else EMPTY_CATEGORY, "chance": float(chance_per[c][a])}
                for c, t in tallies.items()
            ]
    if blocks and not any(t.keypoints for t in tallies.values()):
        log.warning("SPair of %s: %s; PCK is NaN", model, NO_KEYPOINT)
    return rows, per_category


def run(
    model: str,
    model_entry: Mapping[str, Any],
    pairs: Mapping[str, Sequence[Pair]],
    alphas: Sequence[float] = spair.ALPHAS,
    image_size: int | None = None,
    renormalize: bool = False,
    batch_size: int = 16,
    max_images: int = 64,
    device: str = "auto",
    threads: int = 1,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Build ``model`` as extraction does and score every block: (mean rows, per-category rows)."""
    from ...models.devices import resolve_device
    from ...models.registry import build, spec_from_config

    if not alphas or min(alphas) <= 0:
        raise ConfigError(f"analyses.spair.alphas = {list(alphas)} must be positive numbers")
    torch.set_num_threads(max(1, threads))
    spec = spec_from_config(model, model_entry)
    if image_size is not None:
        spec = dataclasses.replace(spec, image_size=(int(image_size), int(image_size)))
    net, report = build(spec)
    log.info("model %s: %s; letterbox canvas %s", model, report.summary(), spec.image_size)
    start = time.perf_counter()
    tallies = evaluate(
        net, pairs, spec.image_size, to_tensor(spec.mean, spec.std), alphas, spec.interpolation, renormalize,
        batch_size, max_images, resolve_device(device),
    )
    log.info("scored %d pairs in %.1f s", sum(t.pairs for t in tallies.values()), time.perf_counter() - start)
    return result_rows(tallies, model, alphas)
