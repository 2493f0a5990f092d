"""Batched image augmentations in torch, every random draw from one ``torch.Generator``.

Images are float (B, 3, H, W) in [0, 1], before normalization. The same
generator state gives the same augmented batch on every CPU run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 grey, as torchvision's rgb_to_grayscale


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def resized_crop_flip(
    images: torch.Tensor,
    size: tuple[int, int],
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> torch.Tensor:
    """Random resized crop and horizontal flip: (B, 3, H, W) -> (B, 3, size).

    Each crop covers a fraction in ``scale`` of the image area with aspect
    ratio (log-uniform) in ``ratio``, at a uniform position, resampled
    bilinearly; with scale (1, 1), ratio (1, 1) and no flip it is the identity
    for ``size`` = (H, W).
    """
    b = images.shape[0]
    area = _uniform(b, scale[0], scale[1], generator)
    aspect = torch.exp(_uniform(b, math.log(ratio[0]), math.log(ratio[1]), generator))
    half_w = torch.sqrt(area * aspect).clamp(max=1.0)  # half-extent in [-1, 1] coordinates = fraction of the side
    half_h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (2 * torch.rand(b, generator=generator) - 1) * (1 - half_w)
    cy = (2 * torch.rand(b, generator=generator) - 1) * (1 - half_h)
    sign = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = half_w * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = half_h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta.to(images.dtype), [b, images.shape[1], *size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def grey(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    weights = torch.tensor(LUMA, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def hue_rotation(angle: torch.Tensor) -> torch.Tensor:
    """(B,) angles in radians -> (B, 3, 3) rotations of RGB about the grey axis (1, 1, 1)."""
    k = torch.full((3,), 1 / math.sqrt(3))
    cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    return cos * torch.eye(3) + sin * cross + (1 - cos) * torch.outer(k, k)


def colour_jitter(
    images: torch.Tensor,
    strength: float,
    generator: torch.Generator,
    p: float = 0.8,
    grey_p: float = 0.2,
) -> torch.Tensor:
    """Brightness, contrast and saturation factors in [1 - s, 1 + s], a hue rotation of
    up to s / 4 of a turn (applied together with probability ``p``), then greyscale with
    probability ``grey_p``; clamped to [0, 1]. ``strength`` 0 returns the images unchanged."""
    if strength == 0:
        return images
    b = images.shape[0]
    apply = (torch.rand(b, generator=generator) < p).view(b, 1, 1, 1)
    factors = _uniform(3 * b, 1 - strength, 1 + strength, generator).view(3, b, 1, 1, 1)
    angle = _uniform(b, -strength / 4, strength / 4, generator) * 2 * math.pi
    to_grey = (torch.rand(b, generator=generator) < grey_p).view(b, 1, 1, 1)
    x = images * factors[0]
    mean = grey(x).mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factors[1] + mean
    g = grey(x)
    x = (x - g) * factors[2] + g
    x = torch.einsum("bij,bjhw->bihw", hue_rotation(angle), x).clamp(0, 1)
    x = torch.where(apply, x, images)
    return torch.where(to_grey, grey(x).expand_as(x), x)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> the model's input normalization."""
    m = torch.tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - m) / s


class Augment:
    """Crop, flip and colour jitter of a training batch, then the model's normalization."""

    def __init__(
        self,
        size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        scale: tuple[float, float],
        jitter: float,
    ):
        self.size, self.mean, self.std, self.scale, self.jitter = size, tuple(mean), tuple(std), scale, jitter

    def __call__(self, images: torch.Tensor, generator: torch.Generator, jitter: bool = True) -> torch.Tensor:
        x = resized_crop_flip(images, self.size, self.scale, generator)
        if jitter:
            x = colour_jitter(x, self.jitter, generator)
        return normalize(x, self.mean, self.std)
