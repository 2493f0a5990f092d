"""Dense features: every block's spatial tokens of a whole frame, at a chosen resolution.

Used by the DAVIS label propagation (docs/downstream.md). The frame is resized
so that its shorter side is ``short_side`` and its longer side is scaled alike
and floored to a multiple of the patch size (the study: 480p -> 448 x 784).
Two ways to cover it with tokens:

``tiled`` (the study)
    windows of the model's own input size (``models.<alias>.image_size``, 224)
    at rows / columns ``min(i * window, length - window)``; each window is one
    image of a batch, and each token of the frame's grid is taken from the first
    window (row-major) that covers it (the study's ``dense_extractor``).
``full``
    the whole frame in one forward pass, the absolute position embedding
    interpolated to the frame's grid (timm's ``dynamic_img_size``); only for
    architectures that support it (not BEiT in timm).

Features are block outputs (the residual stream, before the final norm), the
same points the dumps record; the model is built exactly as for extraction
(:func:`vitscope.models.registry.build`, same checkpoints and provenance).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2 as T
from torchvision.transforms.functional import InterpolationMode

from ...errors import ConfigError, ModelError
from ...models.registry import LoadReport, ModelSpec, build, geometry, set_fused_attention, spec_from_config

log = logging.getLogger(__name__)

MODES = ("tiled", "full")


def resized_size(height: int, width: int, short_side: int, patch: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of a frame resized so its shorter side is ``short_side`` (floored to the patch) and the
    longer side scaled alike, floored to a multiple of the patch (the study's dense extractor)."""
    ph, pw = patch
    if width < height:
        w = short_side // pw * pw
        h = int((w / width * height) // ph * ph)
    else:
        h = short_side // ph * ph
        w = int((h / height * width) // pw * pw)
    if h < ph or w < pw:
        raise ConfigError(f"short_side = {short_side} leaves no token for a {height}x{width} frame")
    return h, w


def window_starts(length: int, window: int) -> list[int]:
    """Starts of the windows covering ``length`` pixels: min(i * window, length - window), i < ceil(length / window)."""
    return [min(i * window, max(length - window, 0)) for i in range(math.ceil(length / window))]


@dataclass(frozen=True)
class Layout:
    """Where a frame's tokens come from: the resized size, the token grid, the windows (pixels)."""

    size: tuple[int, int]
    grid: tuple[int, int]
    windows: tuple[tuple[int, int], ...]  # (top, left) of each window, row-major; one (0, 0) for full


def stitch(tokens: torch.Tensor, starts: list[tuple[int, int]], grid: tuple[int, int]) -> torch.Tensor:
    """Assemble window token grids into the frame's grid.

    tokens: (n, L, th, tw, D) spatial tokens of n windows; starts: their (row, column) in
    tokens; returns (L, gh, gw, D), each token from the first window that covers it.
    """
    n, blocks, th, tw, d = tokens.shape
    out = tokens.new_zeros(blocks, grid[0], grid[1], d)
    for i in reversed(range(n)):  # later windows first: the first window's tokens win
        r, c = starts[i]
        out[:, r : r + th, c : c + tw] = tokens[i]
    return out


class DenseFeatures:
    """A built model that maps a frame (PIL image) to every block's token grid (L, gh, gw, D)."""

    def __init__(self, model: nn.Module, spec: ModelSpec, mode: str, short_side: int, device: torch.device):
        if mode not in MODES:
            raise ConfigError(f"analyses.davis.mode = {mode!r}; expected one of {', '.join(MODES)}")
        self.model, self.spec, self.mode, self.short_side = model.to(device).eval(), spec, mode, short_side
        self.device = device
        set_fused_attention(self.model, True)  # no attention probabilities needed
        self.geom = geometry(self.model)
        self._outputs: list[torch.Tensor] = []
        for block in self.model.blocks:
            block.register_forward_hook(lambda module, args, output: self._outputs.append(output))
        self.mean = torch.tensor(spec.mean).view(3, 1, 1)
        self.std = torch.tensor(spec.std).view(3, 1, 1)

    @classmethod
    def from_config(
        cls, alias: str, entry: dict[str, Any], mode: str, short_side: int, device: torch.device
    ) -> tuple[DenseFeatures, LoadReport]:
        """Build ``models.<alias>`` as extraction does (plus ``dynamic_img_size`` in mode full)."""
        spec = spec_from_config(alias, entry)
        if mode == "full":
            kwargs = dict(spec.model_kwargs)
            kwargs["dynamic_img_size"] = True
            spec = dataclasses.replace(spec, model_kwargs=tuple(sorted(kwargs.items())))
        try:
            model, report = build(spec)
        except TypeError as err:  # timm: the architecture takes no dynamic_img_size
            raise ModelError(
                f"models.{alias} ({spec.arch}) cannot run at another input size in timm ({err}); "
                "use analyses.davis.mode = tiled"
            ) from err
        return cls(model, spec, mode, short_side, device), report

    @property
    def patch(self) -> tuple[int, int]:
        return self.geom.patch

    def layout(self, height: int, width: int) -> Layout:
        """The token layout of a ``height`` x ``width`` frame."""
        h, w = resized_size(height, width, self.short_side, self.patch)
        grid = (h // self.patch[0], w // self.patch[1])
        if self.mode == "full":
            return Layout((h, w), grid, ((0, 0),))
        th, tw = self.spec.image_size
        if h < th or w < tw:
            raise ConfigError(
                f"analyses.davis.short_side = {self.short_side} resizes a {height}x{width} frame to {h}x{w}, smaller "
                f"than the window of models.{self.spec.alias} ({th}x{tw}); raise short_side"
            )
        windows = tuple((y, x) for y in window_starts(h, th) for x in window_starts(w, tw))
        return Layout((h, w), grid, windows)

    def preprocess(self, image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
        """(3, h, w) float32: resized with the model's interpolation (antialiased), normalised."""
        x = T.functional.to_dtype(T.functional.to_image(image.convert("RGB")), torch.float32, scale=True)
        x = T.functional.resize(x, list(size), interpolation=InterpolationMode(self.spec.interpolation),
                                antialias=True)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, Layout]:
        """Every block's spatial tokens of ``image``: (L, gh, gw, D) float32 on the device, and the layout."""
        layout = self.layout(image.size[1], image.size[0])
        x = self.preprocess(image, layout.size)
        if self.mode == "full":
            batch = x[None]
            th, tw = layout.grid
        else:
            wh, ww = self.spec.image_size
            batch = torch.stack([x[:, y : y + wh, c : c + ww] for y, c in layout.windows])
            th, tw = wh // self.patch[0], ww // self.patch[1]
        self._outputs.clear()
        self.model.forward_features(batch.to(self.device))
        if len(self._outputs) != self.geom.blocks:
            raise ModelError(
                f"models.{self.spec.alias}: {len(self._outputs)} block outputs, expected {self.geom.blocks}"
            )
        p = self.geom.prefix
        tokens = torch.stack([out[:, p:].float() for out in self._outputs], dim=1)  # (n, L, th * tw, D)
        self._outputs.clear()
        if tokens.shape[2] != th * tw:
            raise ModelError(
                f"models.{self.spec.alias}: {tokens.shape[2]} spatial tokens per window, expected {th * tw}"
            )
        tokens = tokens.reshape(tokens.shape[0], tokens.shape[1], th, tw, tokens.shape[-1])
        starts = [(y // self.patch[0], c // self.patch[1]) for y, c in layout.windows]
        return stitch(tokens, starts, layout.grid), layout
