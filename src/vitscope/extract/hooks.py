"""Forward hooks on every block, and the recorder that dispatches what they see (docs/dumps.md).

:class:`Recorder` hooks every block's output, its LayerNorm outputs and its attention
probabilities (``attn_drop``) and hands each to the :class:`PartRecorder` of every
product being recorded (:mod:`.products`), which reduces it on the device
(:mod:`.reductions`, :mod:`.fused`) into the batch's outputs (:class:`Outputs`) or into
sums over images kept on the device in float64. :meth:`Recorder.take` hands a batch's
outputs to the pass loop (:mod:`.run`); after the pass each part writes what it kept
(:meth:`PartRecorder.finish`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from logging import Logger
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..io import dumps
from ..models.registry import Geometry

if TYPE_CHECKING:
    from ..features.objects import ImageObjects, ObjectMasks


@dataclass(frozen=True)
class Setting:
    """What the part recorders of one extraction see."""

    geom: Geometry
    #: the ExtractOptions (:class:`vitscope.extract.run.ExtractOptions`)
    options: Any
    products: frozenset[str]
    device: torch.device
    #: N, the images of the extraction; 0 for the warm-up batch, which writes nothing
    images: int
    #: (N,) the dataset positions in the order the images are fed
    order: np.ndarray
    #: the instance masks of the images (products of datasets of kind coco), else None
    objects: ObjectMasks | None = None


@dataclass
class Outputs:
    """A batch's per-batch products, by dataset name: one value per block (or LayerNorm
    point) each, stacked over them by :meth:`Recorder.take`."""

    out: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def add(self, name: str, value: torch.Tensor) -> None:
        """Keep a float32/float64 *copy*: a view would pin the whole block output or
        attention tensor (B, H, T, T) of every block until the batch is written."""
        dtype = torch.float64 if value.dtype == torch.float64 else torch.float32
        self.out.setdefault(name, []).append(value.to(dtype, copy=True))


class PartRecorder:
    """What one product records (or several reduced in one pass: one recorder class
    serves every product that names it, :class:`vitscope.extract.products.Product`).

    One instance per extraction (and one for the warm-up batch); the hooks run in the
    order the products were registered. Override what the product needs: the
    :class:`Recorder` hooks the LayerNorms only for parts that override :meth:`on_norm`,
    and the attention only when a product of the extraction reads it
    (:attr:`vitscope.io.dumps.ProductLayout.attention`).
    """

    def __init__(self, setting: Setting) -> None:
        self.setting = setting

    def sizes(self) -> dict[str, int]:
        """The :class:`vitscope.io.dumps.Dims` counts this part decides (exemplars, CKA minibatches)."""
        return {}

    def announce(self, log: Logger) -> None:
        """Log how it will record, once per extraction (not for the warm-up)."""

    def start_batch(self, positions: np.ndarray, objects: Sequence[ImageObjects] | None) -> None:
        """Before a batch (on the host): its dataset positions, and its images' objects."""

    def on_block(self, out: Outputs, index: int, x: torch.Tensor) -> None:
        """Block ``index``'s output (B, T, D)."""

    def on_norm(self, out: Outputs, point: int, x: torch.Tensor) -> None:
        """LayerNorm output (B, T, D) at ``point`` (block i's norm1 is 2i, its norm2 2i + 1)."""

    def on_attention(self, out: Outputs, index: int, attn: torch.Tensor) -> None:
        """Block ``index``'s attention probabilities (B, H, T, T)."""

    def finish(self, writer: dumps.DumpWriter) -> None:
        """After the pass: write what the part kept over the images (sums, indices)."""


class Recorder:
    """Forward hooks that reduce every block's outputs and attention on the fly, through
    one :class:`PartRecorder` per class in ``parts`` (in that order)."""

    def __init__(self, model: nn.Module, setting: Setting, parts: Sequence[type[PartRecorder]]):
        self.model, self.setting = model, setting
        self.geom = setting.geom
        self.products = setting.products
        self.active = True
        self.batch = Outputs()
        self.handles: list[Any] = []
        self.parts = {cls: cls(setting) for cls in parts}
        self.attention = bool(self.products & dumps.ATTENTION_PRODUCTS)
        self.attn_calls = [0] * setting.geom.blocks
        self._blocks, self._norms, self._attns = (
            [p for p in self.parts.values() if getattr(type(p), hook) is not getattr(PartRecorder, hook)]
            for hook in ("on_block", "on_norm", "on_attention")
        )

    def part(self, cls: type[PartRecorder]) -> PartRecorder:
        return self.parts[cls]

    # ----------------------------------------------------------------- hooks
    def attach(self) -> None:
        for index, block in enumerate(self.model.blocks):
            self.handles.append(block.register_forward_hook(self._block_hook(index)))
            if self.attention:
                self.handles.append(block.attn.attn_drop.register_forward_hook(self._attn_hook(index)))
            if self._norms:
                for which, norm in enumerate((block.norm1, block.norm2)):
                    self.handles.append(norm.register_forward_hook(self._norm_hook(2 * index + which)))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _block_hook(self, index: int):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if self.active:
                for part in self._blocks:
                    part.on_block(self.batch, index, output)

        return hook

    def _norm_hook(self, point: int):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if self.active:
                for part in self._norms:
                    part.on_norm(self.batch, point, output)

        return hook

    def _attn_hook(self, index: int):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if self.active:
                self.attn_calls[index] += 1
                for part in self._attns:
                    part.on_attention(self.batch, index, output)

        return hook

    # ----------------------------------------------------------------- batches
    def start_batch(self, positions: np.ndarray, objects: Sequence[ImageObjects] | None = None) -> None:
        """Tell the parts the coming batch's positions and objects (decided on the host,
        so the hooks never synchronise with the device)."""
        self.batch = Outputs()
        for part in self.parts.values():
            part.start_batch(positions, objects)

    def take(self) -> dict[str, torch.Tensor]:
        """Per-batch products stacked over blocks, on their way to the host; resets the batch.

        Per-image products: (B, L, ...); Gram matrices: (chunks, points, b, b). From an
        accelerator the copies are asynchronous (pinned memory): wait for the
        returned batch's event before reading them (see :class:`vitscope.extract.run._HostBatch`).
        """
        out = {
            name: torch.stack(values, dim=1).to("cpu", non_blocking=True) for name, values in self.batch.out.items()
        }
        self.batch = Outputs()
        return out
