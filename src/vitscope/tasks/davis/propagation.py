"""DAVIS video object segmentation with every block: one sequence per job, then pooled.

:func:`run_sequence` streams the frames of one sequence through the model once
(:class:`vitscope.tasks.davis.dense.DenseFeatures`), propagates the first annotation with
each block's features (:class:`vitscope.tasks.davis.evaluation.Propagator`, one per
block), writes every block's predicted masks as palette PNGs and scores them
against the annotations as it goes. Only the first frame's and the last
``context`` frames' features are held per block, so memory does not grow
with the sequence and no dense features are written to disk.

:func:`pool_tables` pools the per-sequence tables (objects of all sequences)
and :func:`link_results` lays the masks out per block in the DAVIS results
layout (``masks/block05/<seq>/00000.png``) as links to the sequence outputs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import DatasetError
from ...io import video
from ...io.datasets import load_image
from ...io.dumps import atomic_path
from ...io.tables import read_csv
from ...models.devices import resolve_device
from . import evaluation as davis
from .dense import DenseFeatures

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DavisOptions:
    """The ``analyses.davis`` settings (docs/downstream.md)."""

    mode: str = "tiled"
    short_side: int = 448
    temperature: float = davis.TEMPERATURE
    topk: int = davis.TOPK
    context: int = davis.CONTEXT
    radius: int = davis.RADIUS
    bound_th: float = davis.BOUND_TH


def block_folder(block: int) -> str:
    """Folder name of a 0-based block: block01, block02, ... (1-indexed)."""
    return f"block{block + 1:02d}"


def run_sequence(
    model: str,
    model_entry: dict[str, Any],
    dataset: str,
    dataset_entry: dict[str, Any],
    sequence: str,
    output: str | Path,
    options: DavisOptions,
    device: str = "auto",
    threads: int = 1,
) -> list[dict[str, Any]]:
    """Propagate, write and score one sequence with every block of ``model``.

    Masks go to ``{output}/block{b:02d}/<frame stem>.png`` (frame 0 is the given annotation,
    as DINO writes it); the folder appears whole or not at all. Returns the per-object rows
    (:data:`vitscope.tasks.davis.evaluation.OBJECT_COLUMNS`).
    """
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    key = f"datasets.{dataset}"
    seq = video.read_sequence(dataset_entry["root"], sequence, dataset_entry.get("resolution", "480p"), key)
    n = len(seq.frames)
    if n < 3:
        raise DatasetError(f"{key}: sequence '{sequence}' has {n} frames; the protocol excludes the first and last")
    target = resolve_device(device)
    dense, report = DenseFeatures.from_config(model, model_entry, options.mode, options.short_side, target)
    log.info("model %s: %s", model, report.summary())
    first = video.read_annotation(seq.annotations[0])
    palette = video.read_palette(seq.annotations[0])
    objects = davis.first_frame_objects(first)
    if objects == 0:
        raise DatasetError(f"annotation '{seq.annotations[0]}' holds no object (ids 1..254)")
    size = first.shape

    image = load_image(seq.frames[0])
    _check_size(seq.frames[0], (image.size[1], image.size[0]), size)
    feats, layout = dense(image)
    blocks, grid = feats.shape[0], layout.grid
    log.info("sequence %s: %d frames of %dx%d, %d objects; %s features at %dx%d (grid %dx%d, %d windows), %d blocks",
             sequence, n, size[0], size[1], objects, options.mode, *layout.size, *grid, len(layout.windows), blocks)
    labels0 = davis.first_labels(first, grid, objects).to(target)
    props = [
        davis.Propagator(feats[b].reshape(-1, feats.shape[-1]), labels0, grid, options.temperature, options.topk,
                         options.context, options.radius)
        for b in range(blocks)
    ]
    j = np.zeros((blocks, objects, n - 2), dtype=np.float64)
    f = np.zeros_like(j)
    with atomic_path(output) as tmp:  # the folder of masks appears whole; a failure leaves nothing
        for b in range(blocks):
            video.write_palette_png(first, tmp / block_folder(b) / f"{seq.stems[0]}.png", palette)
        start = time.perf_counter()
        for t in range(1, n):
            image = load_image(seq.frames[t])
            _check_size(seq.frames[t], (image.size[1], image.size[0]), size)
            feats, _ = dense(image)
            scorer = None
            if t < n - 1:
                gt = video.read_annotation(seq.annotations[t])
                _check_size(seq.annotations[t], gt.shape, size)
                scorer = davis.FrameScorer(gt, objects, options.bound_th)
            for b in range(blocks):
                soft = props[b].step(feats[b].reshape(-1, feats.shape[-1]))
                mask = davis.to_mask(soft, grid, dense.patch, size)
                video.write_palette_png(mask, tmp / block_folder(b) / f"{seq.stems[t]}.png", palette)
                if scorer is not None:
                    j[b, :, t - 1], f[b, :, t - 1] = scorer(mask)
            if t % 10 == 0 or t == n - 1:
                log.info("frame %d/%d (%.2f s/frame)", t + 1, n, (time.perf_counter() - start) / t)
    rows = []
    for b in range(blocks):
        rows += davis.object_rows(j[b], f[b], model, b + 1, sequence)
    return rows


def _check_size(path: Path, size: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if tuple(size) != tuple(expected):
        raise DatasetError(
            f"'{path}' is {size[0]}x{size[1]}; the sequence's first annotation is {expected[0]}x{expected[1]}"
        )


def pool_tables(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Pooled rows (:data:`vitscope.tasks.davis.evaluation.COLUMNS`) over the per-sequence tables of one model."""
    rows = [row for path in paths for row in read_csv(path)]
    if not rows:
        raise DatasetError(f"no DAVIS results in {', '.join(map(str, paths))}")
    return davis.pooled(rows)


def link_results(sequence_dirs: Sequence[str | Path], output: str | Path) -> int:
    """The DAVIS results layout per block: ``{output}/block{b:02d}/<seq>`` -> ``<sequence dir>/block{b:02d}``.

    Relative symbolic links (the tree can be moved); the folder appears whole. Returns the
    number of links.
    """
    output = Path(output)
    count = 0
    with atomic_path(output) as tmp:
        tmp.mkdir()
        for seq_dir in map(Path, sequence_dirs):
            for block in sorted(p for p in seq_dir.iterdir() if p.is_dir() and p.name.startswith("block")):
                link = tmp / block.name / seq_dir.name
                link.parent.mkdir(parents=True, exist_ok=True)
                # relative to the final location {output}/{block}/
                rel = os.path.relpath(block.resolve(), (output / block.name).resolve())
                link.symlink_to(rel, target_is_directory=True)
                count += 1
    return count
