"""The training loop: AdamW, linear warm-up then cosine decay, seeded batches."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from typing import Any, Protocol, TextIO

import torch
from torch import nn

from .settings import TrainSettings

log = logging.getLogger(__name__)

NO_DECAY = ("pos_embed", "cls_token", "mask_token")


class Objective(Protocol):
    """What :func:`fit` trains: a module with a scalar loss and a hook after each step."""

    encoder: nn.Module

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...

    def after_step(self, progress: float) -> None: ...


def learning_rate(step: int, settings: TrainSettings) -> float:
    """Learning rate of 0-based ``step``: linear warm-up to ``lr`` over warmup_steps, then half-cosine to 0."""
    warm = settings.warmup_steps
    if step < warm:
        return settings.lr * (step + 1) / warm
    rest = max(1, settings.steps - warm)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / rest))


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: weight decay on matrices, none on biases, norms and embeddings."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(NO_DECAY) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless (batch_size,) index batches: a fresh permutation of range(n) per epoch, remainder dropped."""
    if batch_size > n:
        raise ValueError(f"batch_size = {batch_size} exceeds the {n} training images")
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def fit(
    objective: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainSettings,
    progress: TextIO | None = None,
) -> list[dict[str, Any]]:
    """Train ``objective`` (an :class:`Objective`) in place; return one row per step (step, loss, lr).

    images: (N, 3, H, W) float in [0, 1]; labels: (N,) int64 (ignored by label-free objectives).
    Batches, augmentations and masks come from one generator seeded with ``settings.seed``.
    """
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(param_groups(objective, settings.weight_decay), lr=settings.lr, betas=(0.9, 0.95))
    objective.train()
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    every = max(1, settings.steps // 20)
    stream = batches(images.shape[0], settings.batch_size, generator)
    for step in range(settings.steps):
        idx = next(stream)
        lr = learning_rate(step, settings)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = objective.loss(images[idx], labels[idx], generator)  # type: ignore[operator]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {step + 1} (lower lr?)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
        optimizer.step()
        objective.after_step((step + 1) / settings.steps)  # type: ignore[operator]
        rows.append({"step": step + 1, "loss": float(loss.detach()), "lr": lr})
        if progress is not None and ((step + 1) % every == 0 or step + 1 == settings.steps):
            elapsed = time.perf_counter() - start
            rate = (step + 1) * settings.batch_size / elapsed
            progress.write(f"step {step + 1}/{settings.steps} loss {rows[-1]['loss']:.4f} lr {lr:.2e} "
                           f"({elapsed:.1f} s, {rate:.0f} images/s)\n")
    objective.eval()
    return rows
