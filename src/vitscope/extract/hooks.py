"""Forward hooks on every block, and the recorder that reduces what they see (docs/dumps.md).

:class:`Recorder` hooks every block's output, its LayerNorm outputs and its attention
probabilities (``attn_drop``), reduces them on the device per batch (:mod:`.reductions`,
:mod:`.fused`) and keeps the per-batch products until :meth:`Recorder.take` hands them
to the pass loop (:mod:`.run`); sums over images stay on the device in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..attention import metrics
from ..io.dumps import ATTENTION_PRODUCTS
from ..models.registry import Geometry
from . import fused, reductions

if TYPE_CHECKING:
    from ..features.objects import ImageObjects


@dataclass
class _Batch:
    #: (row in batch, dataset position) of the exemplar images in this batch
    exemplar_rows: list[tuple[int, int]] = field(default_factory=list)
    #: (B, O_max, G) object weights of each image (zero rows pad) and the (O,) rows of
    #: the flattened (B * O_max) products that are real objects, on the device
    object_weights: torch.Tensor | None = None
    object_rows: torch.Tensor | None = None
    out: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def add(self, name: str, value: torch.Tensor) -> None:
        """Keep a float32/float64 *copy*: a view would pin the whole block output or
        attention tensor (B, H, T, T) of every block until the batch is written."""
        dtype = torch.float64 if value.dtype == torch.float64 else torch.float32
        self.out.setdefault(name, []).append(value.to(dtype, copy=True))


class Recorder:
    """Forward hooks that reduce every block's outputs and attention on the fly."""

    def __init__(
        self,
        model: nn.Module,
        geom: Geometry,
        products: Sequence[str],
        exemplars: np.ndarray,
        cka_batch: int,
        device: torch.device,
    ):
        self.model, self.geom, self.products = model, geom, frozenset(products)
        self.device = device
        self.cka_batch = cka_batch
        self.exemplars = frozenset(int(p) for p in exemplars)
        self.active = True
        self.batch = _Batch()
        self.handles: list[Any] = []
        L, H, T = geom.blocks, geom.heads, geom.tokens  # noqa: N806
        g = geom.grid[0] * geom.grid[1] if "attention_sums" in self.products else 0  # no accumulators unless asked
        self.cls_sum = torch.zeros(L, H, T if g else 0, dtype=torch.float64, device=device)
        self.spatial_sum = torch.zeros(L, H, g, g, dtype=torch.float64, device=device)
        reduced = bool(self.products & {"distance", "attention_sums"}) and geom.prefix > 0
        #: (L, H) spatial rows with zero spatial mass, over images (docs/attention.md)
        self.zero_rows = torch.zeros(L, H if reduced else 0, dtype=torch.int64, device=device)
        #: (L, H, P + 1) sums over images of the sink statistics (:func:`.reductions.sink_statistics`)
        self.sink_sum = torch.zeros(L, H, geom.prefix + 1 if g else 0, dtype=torch.float64, device=device)
        self.dist32 = metrics.distance_matrix(geom.grid, device=device).float()
        self.attn_calls = [0] * L
        self.exemplar_maps: dict[int, list[torch.Tensor]] = {}

    # ----------------------------------------------------------------- hooks
    def attach(self) -> None:
        for index, block in enumerate(self.model.blocks):
            self.handles.append(block.register_forward_hook(self._block_hook(index)))
            if self.products & ATTENTION_PRODUCTS:
                self.handles.append(block.attn.attn_drop.register_forward_hook(self._attn_hook(index)))
            if "gram" in self.products:
                for which, norm in enumerate((block.norm1, block.norm2)):
                    self.handles.append(norm.register_forward_hook(self._norm_hook(2 * index + which)))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _block_hook(self, index: int):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if self.active:
                self._on_tokens(index, output, point="block")

        return hook

    def _norm_hook(self, point: int):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if self.active:
                self._on_tokens(point, output, point="norm")

        return hook

    def _attn_hook(self, index: int):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if self.active:
                self._on_attention(index, output)

        return hook

    # ------------------------------------------------------------ reductions
    def _grams(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, T, D) -> {rep: (chunks, b, b)}: :func:`minibatch_grams` of this batch."""
        return reductions.minibatch_grams(x, self.cka_batch, self.geom.prefix)

    def _on_tokens(self, index: int, x: torch.Tensor, point: str) -> None:
        p = self.geom.prefix
        if point == "block" and "tokens" in self.products:
            spatial_mean = x[:, p:].mean(dim=1)
            self.batch.add("tokens/cls", x[:, 0] if p > 0 else spatial_mean)
            self.batch.add("tokens/spatial_mean", spatial_mean)
            if p > 1:
                self.batch.add("tokens/registers", x[:, 1:p])
        if point == "block" and self.batch.object_weights is not None:
            # (B, O_max, G) @ (B, G, D) -> (B * O_max, D), padding rows dropped
            pooled = torch.bmm(self.batch.object_weights, x[:, p:].float()).flatten(0, 1)
            self.batch.add("objects/features", pooled.index_select(0, self.batch.object_rows))
        if "gram" in self.products:
            group = "blocks" if point == "block" else "norms"
            for name, value in self._grams(x).items():
                self.batch.add(f"cka/{group}/{name}", value)

    def _on_attention(self, index: int, attn: torch.Tensor) -> None:
        """attn: (B, H, T, T). Per-image values are computed in the model's precision;
        sums over images accumulate in float64."""
        self.attn_calls[index] += 1
        p = self.geom.prefix
        cls_row = attn[:, :, 0, :] if p > 0 else None
        if "cls_attention" in self.products and cls_row is not None:
            self.batch.add("attention/cls", cls_row)
        accumulate = "attention_sums" in self.products and cls_row is not None
        if "distance" in self.products or accumulate:
            # spatial rows renormalised (B, H, G, G): per-query distance (B, H, G) and
            # the float64 sum over images, in one pass on CUDA (vitscope.extract.fused)
            per_query = fused.reduce_spatial(
                attn, p, self.dist32, self.spatial_sum[index] if accumulate else None, "distance" in self.products,
                self.zero_rows[index] if p > 0 else None,
            )
            if per_query is not None:
                # zero-mass rows (NaN) are left out of each image's mean (docs/attention.md)
                self.batch.add("attention/distance", per_query.to(torch.float64).nanmean(dim=-1))
            if accumulate:
                reductions.accumulate(self.cls_sum[index], cls_row)
                reductions.accumulate(self.sink_sum[index], reductions.sink_statistics(attn, p))
        for row, pos in self.batch.exemplar_rows:
            # a copy (a view would keep the whole batch's attention alive), kept on the
            # device until the end: a copy to the host here would stall the pipeline
            self.exemplar_maps.setdefault(pos, []).append(attn[row].to(torch.float32, copy=True))

    def start_batch(self, positions: np.ndarray, objects: Sequence[ImageObjects] | None = None) -> None:
        """Note which rows of the coming batch are exemplars, and move its object
        weights to the device (both decided on the host, so the hooks never
        synchronise with the device)."""
        self.batch = _Batch()
        if "exemplars" in self.products:
            self.batch.exemplar_rows = [(r, int(p)) for r, p in enumerate(positions) if int(p) in self.exemplars]
        if "objects" in self.products and objects is not None:
            weights, rows = reductions.object_batch(objects, self.geom.grid[0] * self.geom.grid[1])
            self.batch.object_weights = weights.to(self.device, non_blocking=True)
            self.batch.object_rows = rows.to(self.device, non_blocking=True)

    def take(self) -> dict[str, torch.Tensor]:
        """Per-batch products stacked over blocks, on their way to the host; resets the batch.

        Per-image products: (B, L, ...); Gram matrices: (chunks, points, b, b). From an
        accelerator the copies are asynchronous (pinned memory): wait for the
        returned batch's event before reading them (see :class:`vitscope.extract.run._HostBatch`).
        """
        out = {
            name: torch.stack(values, dim=1).to("cpu", non_blocking=True) for name, values in self.batch.out.items()
        }
        self.batch = _Batch()
        return out
