"""From config entries and an image index to a checkpoint file: what the ``train`` rule runs."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from ..errors import DatasetError, ModelError
from ..io.datasets import Entry, load_image, read_index
from ..io.dumps import atomic_path
from ..io.preprocess import preprocess
from ..io.tables import write_csv
from ..models import registry
from ..models.formats import mocov3
from .augment import Augment
from .contrastive import Contrastive
from .loop import fit
from .mae import MaskedAutoencoder
from .settings import TrainSettings, from_config
from .supervised import Supervised

log = logging.getLogger(__name__)

LOSS_COLUMNS = ("model", "objective", "step", "loss", "lr")


def initial_encoder(spec: registry.ModelSpec, sincos_pos_embed: bool = True) -> nn.Module:
    """The encoder every objective (``random`` included) starts from.

    The ``weights: random`` model of ``spec`` (timm's initialisation, ``spec.seed``); with
    ``sincos_pos_embed`` its learned position embedding starts as the fixed 2-D sin-cos
    embedding of MoCo-v3 and MAE (CLS row zero) instead of noise, which lets a small ViT
    leave its initial plateau in far fewer steps (docs/demo.md).
    """
    model, _ = registry.build(replace(spec, weights="random", checkpoint=None))
    if sincos_pos_embed:
        pos = getattr(model, "pos_embed", None)
        if pos is None or getattr(model, "no_embed_class", False) or pos.shape[1] != 1 + int(
            np.prod(model.patch_embed.grid_size)
        ):
            raise ModelError(f"{spec.arch}: sincos_pos_embed needs a ViT whose pos_embed covers CLS and the grid")
        with torch.no_grad():
            pos.copy_(mocov3.sincos_pos_embed(tuple(model.patch_embed.grid_size), pos.shape[-1]))
    return model


def load_images(entries: Sequence[Entry], spec: registry.ModelSpec) -> torch.Tensor:
    """(N, 3, h, w) float images in [0, 1], resized and center-cropped to ``spec.image_size`` exactly as
    extraction preprocesses them (before normalization)."""
    transform = preprocess(spec.image_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), spec.interpolation)
    return torch.stack([transform(load_image(e.path, e.box)) for e in entries])


def labels_of(entries: Sequence[Entry], key: str) -> torch.Tensor:
    """(N,) int64 class labels of an index; an unlabelled image is a :class:`DatasetError`."""
    labels = torch.tensor([e.label for e in entries], dtype=torch.int64)
    if labels.numel() and int(labels.min()) < 0:
        raise DatasetError(f"{key} names an unlabelled dataset; objective 'fs' needs class labels (ImageFolder)")
    return labels


def make_objective(
    settings: TrainSettings, encoder: nn.Module, spec: registry.ModelSpec, num_classes: int
) -> nn.Module:
    """The objective module around ``encoder``; its own layers are initialised from ``settings.seed``."""
    augment = Augment(spec.image_size, spec.mean, spec.std, settings.crop_scale, settings.jitter)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        if settings.objective == "fs":
            return Supervised(encoder, num_classes, augment, settings.label_smoothing)
        if settings.objective == "contrastive":
            return Contrastive(encoder, augment, settings.projection_dim, settings.temperature, settings.momentum)
        if settings.objective == "mae":
            return MaskedAutoencoder(encoder, augment, settings.mask_ratio, settings.decoder_width,
                                     settings.decoder_depth)
    raise ValueError(f"objective {settings.objective!r} has no trainable module")


def train_encoder(
    settings: TrainSettings,
    spec: registry.ModelSpec,
    entries: Sequence[Entry],
    key: str = "models.?.train.dataset",
    progress: TextIO | None = None,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train the encoder of ``spec`` with ``settings`` on the images of ``entries``.

    Returns the trained encoder (eval mode; for ``random`` the initialisation) and the
    loss rows (step, loss, lr), none for ``random``.
    """
    encoder = initial_encoder(spec, settings.sincos_pos_embed)
    if settings.objective == "random":
        return encoder, []
    if not entries:
        raise DatasetError(f"{key} = '{settings.dataset}' holds no images")
    if settings.batch_size > len(entries):
        raise DatasetError(
            f"{key} = '{settings.dataset}' holds {len(entries)} images, fewer than batch_size = {settings.batch_size}"
        )
    images = load_images(entries, spec)
    if settings.objective == "fs":
        labels = labels_of(entries, key)
        num_classes = int(labels.max()) + 1
    else:
        labels = torch.zeros(len(entries), dtype=torch.int64)
        num_classes = 0
    objective = make_objective(settings, encoder, spec, num_classes)
    rows = fit(objective, images, labels, settings, progress)
    return encoder.eval(), rows


def save_checkpoint(encoder: nn.Module, path: str | Path, metadata: Mapping[str, Any] | None = None) -> None:
    """The encoder's state dict as safetensors (timm key layout), written atomically.

    The file's bytes depend only on the tensors and ``metadata``, stored as one JSON
    string with sorted keys under the single header key ``vitscope`` (safetensors writes
    several metadata keys in a random order), so equal weights give equal SHA-256.
    """
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
    meta = {"vitscope": json.dumps(dict(metadata), sort_keys=True)} if metadata else None
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


def train_checkpoint(
    alias: str,
    model_entry: Mapping[str, Any],
    train_entry: Mapping[str, Any],
    index: str | None,
    checkpoint: str,
    losses: str,
    threads: int = 1,
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Train ``models.<alias>`` as its ``train`` entry says; write the checkpoint and the loss table.

    ``index``: the training dataset's index CSV (None for objective ``random``).
    Returns a summary (objective, steps, seconds, final loss).
    """
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True)
    settings = from_config(alias, train_entry)
    spec = registry.spec_from_config(alias, model_entry)
    entries = read_index(index) if index and settings.objective != "random" else []
    log.info("train %s: objective %s on %s (%d images), %s, %d thread(s)", alias, settings.objective,
             settings.dataset, len(entries), spec.arch, torch.get_num_threads())
    start = time.perf_counter()
    encoder, rows = train_encoder(settings, spec, entries, key=f"models.{alias}.train.dataset", progress=progress)
    seconds = time.perf_counter() - start
    metadata = {"model": alias, "arch": spec.arch, "model_kwargs": dict(spec.model_kwargs),
                "image_size": list(spec.image_size), "init_seed": spec.seed, **settings.describe()}
    save_checkpoint(encoder, checkpoint, metadata)
    write_csv([{"model": alias, "objective": settings.objective, **row} for row in rows], losses,
              columns=LOSS_COLUMNS)
    summary = {"objective": settings.objective, "steps": len(rows), "seconds": round(seconds, 2),
               "final_loss": rows[-1]["loss"] if rows else None, "sha256": registry.sha256_file(checkpoint)}
    log.info("train %s: %s", alias, summary)
    return summary
