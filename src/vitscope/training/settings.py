"""The ``models.<alias>.train`` config entry: how one checkpoint is trained."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

#: Teaching signals: supervised classification, contrastive (MoCo-v3 style),
#: masked autoencoding, and none (the initialisation, saved untrained).
OBJECTIVES = ("fs", "contrastive", "mae", "random")


@dataclass(frozen=True)
class TrainSettings:
    """Training recipe of one model; defaults match workflow/schemas/config.schema.yaml."""

    objective: str
    dataset: str | None = None
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.1
    seed: int = 0
    sincos_pos_embed: bool = True
    crop_scale: tuple[float, float] = (0.35, 1.0)
    jitter: float = 0.4
    label_smoothing: float = 0.1
    temperature: float = 0.2
    momentum: float = 0.99
    projection_dim: int = 128
    mask_ratio: float = 0.75
    decoder_width: int = 64
    decoder_depth: int = 2

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup * self.steps))

    def describe(self) -> dict[str, Any]:
        """The settings as a flat dict (checkpoint metadata, logs)."""
        out = dataclasses.asdict(self)
        out["crop_scale"] = list(self.crop_scale)
        return out


def from_config(alias: str, entry: Mapping[str, Any]) -> TrainSettings:
    """Resolve ``models.<alias>.train``; a bad value is a :class:`ConfigError` naming its key."""
    key = f"models.{alias}.train"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{key} must be a mapping with at least 'objective'")
    known = {f.name for f in dataclasses.fields(TrainSettings)}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ConfigError(f"{key} has unknown keys {unknown}; known: {', '.join(sorted(known))}")
    objective = entry.get("objective")
    if objective not in OBJECTIVES:
        raise ConfigError(f"{key}.objective = {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    values = dict(entry)
    if "crop_scale" in values:
        scale = values["crop_scale"]
        if not (isinstance(scale, (list, tuple)) and len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
            raise ConfigError(f"{key}.crop_scale = {scale!r} must be [lo, hi] with 0 < lo <= hi <= 1")
        values["crop_scale"] = (float(scale[0]), float(scale[1]))
    settings = TrainSettings(**values)
    if objective != "random" and not settings.dataset:
        raise ConfigError(f"{key}.dataset is required for objective {objective!r} (the images to train on)")
    checks = {
        "steps": settings.steps >= (0 if objective == "random" else 1),
        "batch_size": settings.batch_size >= (2 if objective == "contrastive" else 1),
        "lr": settings.lr > 0,
        "weight_decay": settings.weight_decay >= 0,
        "warmup": 0 <= settings.warmup <= 1,
        "jitter": 0 <= settings.jitter <= 1,
        "label_smoothing": 0 <= settings.label_smoothing < 1,
        "temperature": settings.temperature > 0,
        "momentum": 0 <= settings.momentum <= 1,
        "projection_dim": settings.projection_dim >= 1,
        "mask_ratio": 0 < settings.mask_ratio < 1,
        "decoder_width": settings.decoder_width >= 4 and settings.decoder_width % 4 == 0,
        "decoder_depth": settings.decoder_depth >= 1,
    }
    for name, ok in checks.items():
        if not ok:
            raise ConfigError(f"{key}.{name} = {getattr(settings, name)!r} is out of range (see the config schema)")
    return settings
