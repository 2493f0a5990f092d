"""Synthetic datasets for the embedded demo, written in real on-disk layouts.

``imagefolder``: ``{root}/images/<class>/<nnnnn>.png`` with a binary object
mask beside it in ``{root}/masks/<class>/<nnnnn>.png`` (255 = object). Each
class is a shape with a texture (``circle-stripes``, ``square-dots``, ...);
position, scale, colours and background vary per image, all from one seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
TEXTURES = ("solid", "stripes", "checker", "dots")


@dataclass(frozen=True)
class SyntheticSpec:
    """Size of a synthetic ImageFolder dataset."""

    classes: int = 6
    per_class: int = 12
    image_size: int = 128
    seed: int = 0

    def class_names(self) -> list[str]:
        if not 1 <= self.classes <= len(SHAPES) * len(TEXTURES):
            raise ValueError(f"classes = {self.classes} must be in 1..{len(SHAPES) * len(TEXTURES)}")
        return [
            f"{SHAPES[c % len(SHAPES)]}-{TEXTURES[(c // len(SHAPES) + c) % len(TEXTURES)]}" for c in range(self.classes)
        ]


def shape_mask(shape: str, size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """(size, size) boolean mask of ``shape`` centred at (cy, cx) with half-size ``radius``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dy, dx = (y - cy) / radius, (x - cx) / radius
    if shape == "circle":
        return dx**2 + dy**2 <= 1
    if shape == "square":
        return (np.abs(dx) <= 0.85) & (np.abs(dy) <= 0.85)
    if shape == "triangle":
        return (dy <= 0.8) & (dy >= -1 + 2 * np.abs(dx) * 0.9)
    if shape == "cross":
        return ((np.abs(dx) <= 0.3) & (np.abs(dy) <= 1)) | ((np.abs(dy) <= 0.3) & (np.abs(dx) <= 1))
    if shape == "ring":
        r2 = dx**2 + dy**2
        return (r2 <= 1) & (r2 >= 0.45)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1
    raise ValueError(f"unknown shape {shape!r}")


def texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) pattern in [0, 1]."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    period = rng.uniform(5, 9)
    angle = rng.uniform(0, np.pi)
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    if kind == "solid":
        return np.ones((size, size))
    if kind == "stripes":
        return (np.sin(2 * np.pi * u / period) > 0).astype(np.float64)
    if kind == "checker":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float64)
    if kind == "dots":
        return (((u % period) - period / 2) ** 2 + ((v % period) - period / 2) ** 2 <= (period / 3.2) ** 2).astype(
            np.float64
        )
    raise ValueError(f"unknown texture {kind!r}")


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random colour field (size, size, 3) in [0, 1]."""
    coarse = rng.uniform(0.1, 0.9, size=(4, 4, 3))
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    noise = rng.normal(0, 0.03, size=(size, size, 3))
    return np.clip(np.asarray(img, dtype=np.float64) / 255 + noise, 0, 1)


def render(name: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image of class ``name``: ((size, size, 3) uint8 image, (size, size) bool mask)."""
    shape, kind = name.split("-")
    radius = rng.uniform(0.18, 0.34) * size
    cy, cx = rng.uniform(radius, size - radius, size=2)
    mask = shape_mask(shape, size, cy, cx, radius)
    pattern = texture(kind, size, rng)
    colour_a, colour_b = rng.uniform(0, 1, size=3), rng.uniform(0, 1, size=3)
    fg = pattern[..., None] * colour_a + (1 - pattern[..., None]) * colour_b
    img = np.where(mask[..., None], fg, _background(size, rng))
    return (img * 255).round().astype(np.uint8), mask


def write_imagefolder(root: str | Path, spec: SyntheticSpec) -> list[Path]:
    """Write the dataset under ``root`` (``images/`` and ``masks/``); return the image paths."""
    root = Path(root)
    rng = np.random.default_rng(spec.seed)
    paths = []
    for name in spec.class_names():
        (root / "images" / name).mkdir(parents=True, exist_ok=True)
        (root / "masks" / name).mkdir(parents=True, exist_ok=True)
        for i in range(spec.per_class):
            img, mask = render(name, spec.image_size, rng)
            path = root / "images" / name / f"{i:05d}.png"
            Image.fromarray(img).save(path)
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / name / f"{i:05d}.png")
            paths.append(path)
    return paths
