"""Feeding images to a model: the study's preprocessing and the image dataset (torch).

Index reading and image loading are :mod:`vitscope.io.datasets` (no torch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T
from torchvision.transforms.functional import InterpolationMode

from .datasets import Entry, cover_size, load_image

__all__ = ["Cover", "ImageDataset", "collate_objects", "preprocess"]


def preprocess(
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
) -> T.Compose:
    """The study's preprocessing: resize the shorter side (bicubic), center crop, normalize.

    For a non-square ``image_size`` (h, w), the image is resized just enough to
    cover h x w, keeping its aspect ratio, then center-cropped.
    """
    h, w = image_size
    mode = InterpolationMode(interpolation)
    resize = T.Resize(h, interpolation=mode, antialias=True) if h == w else Cover((h, w), mode)
    return T.Compose(
        [
            T.ToImage(),
            resize,
            T.CenterCrop((h, w)),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean=list(mean), std=list(std)),
        ]
    )


class Cover(torch.nn.Module):
    """Resize so the image covers ``size`` (h, w), keeping the aspect ratio."""

    def __init__(self, size: tuple[int, int], mode: InterpolationMode):
        super().__init__()
        self.size, self.mode = size, mode

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        new = cover_size(tuple(img.shape[-2:]), self.size)
        return T.functional.resize(img, list(new), interpolation=self.mode, antialias=True)


class ImageDataset(Dataset):
    """Images of an index, in a given order, preprocessed; yields (image, position).

    With ``objects`` (a callable (position, (w, h)) -> that image's objects, e.g.
    :class:`vitscope.features.objects.ObjectMasks`) it yields (image, position, objects):
    the per-image host work runs where the image is loaded (DataLoader workers);
    batch such items with :func:`collate_objects`.
    """

    def __init__(
        self,
        entries: Sequence[Entry],
        transform: T.Compose,
        order: Sequence[int] | None = None,
        objects: Callable[[int, tuple[int, int]], Any] | None = None,
    ):
        self.entries = list(entries)
        self.transform = transform
        self.order = list(range(len(self.entries))) if order is None else [int(i) for i in order]
        self.objects = objects

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        pos = self.order[i]
        entry = self.entries[pos]
        image = load_image(entry.path, entry.box)
        if self.objects is None:
            return self.transform(image), pos
        return self.transform(image), pos, self.objects(pos, image.size)


def collate_objects(items: Sequence[tuple[torch.Tensor, int, Any]]) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
    """Batch (image, position, objects) items: stacked images, positions, the objects as a list."""
    images, positions, objects = zip(*items, strict=True)
    return torch.stack(images), torch.tensor(positions, dtype=torch.int64), list(objects)
