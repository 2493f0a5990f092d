"""Forward hooks on every block, and the recorders of the products (docs/dumps.md).

:class:`Recorder` hooks every block's output, its LayerNorm outputs and its attention
probabilities (:func:`.blockwise.tap`: a chunk of images at a time on the blockwise path,
the whole batch through ``attn_drop`` on the explicit one) and hands each to the :class:`PartRecorder` of every
product being recorded (which part records which product: :mod:`.products`). A part
reduces what it sees on the device (:mod:`.reductions`, :mod:`.fused`) into the batch's
outputs (:class:`Outputs`) or into sums over images kept on the device in float64.
:meth:`Recorder.take` hands a batch's outputs to the pass loop (:mod:`.run`); after the
pass each part writes what it kept (:meth:`PartRecorder.finish`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from logging import Logger
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..attention import metrics
from ..io import dumps
from ..models.registry import Geometry
from . import blockwise, fused, precision, reductions
from .shards import TreeSum

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
    #: the fed-order position of ``order[0]``: 0, or where a shard starts (:mod:`.shards`)
    start: int = 0
    #: a shard of a dataset: the parts keep their sums' tree nodes for the merge (:mod:`.shards`)
    shard: bool = False


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

    def on_attention(self, out: Outputs, index: int, attn: torch.Tensor, start: int = 0) -> None:
        """Block ``index``'s attention probabilities (R, H, T, T) of the batch rows
        ``start`` .. ``start + R``: the whole batch on the explicit path, a chunk of it on the
        blockwise path (:mod:`.blockwise`), chunks in order. What a part adds to ``out``
        per chunk is concatenated over the chunks (along dim 0) by the :class:`Recorder`."""

    def kept(self) -> dict[str, torch.Tensor]:
        """What the part keeps over the images so far (its sums), by the dump dataset it is
        written to, on the device; the precision check (:mod:`.precision`) compares it after
        the first batch."""
        return {}

    def finish(self, writer: dumps.DumpWriter) -> None:
        """After the pass: write what the part kept over the images (sums, indices)."""


# --------------------------------------------------------------------------- the products' part recorders
# (registered as products in vitscope.extract.products)


class Tokens(PartRecorder):
    """``tokens``: per image and block, the CLS token (the spatial mean without one),
    the mean of the spatial tokens and the registers."""

    def on_block(self, out: Outputs, index: int, x: torch.Tensor) -> None:
        p = self.setting.geom.prefix
        spatial_mean = x[:, p:].mean(dim=1)
        out.add("tokens/cls", x[:, 0] if p > 0 else spatial_mean)
        out.add("tokens/spatial_mean", spatial_mean)
        if p > 1:
            out.add("tokens/registers", x[:, 1:p])


# --------------------------------------------------------------------------- attention


class ClsAttention(PartRecorder):
    """``cls_attention``: the CLS query's attention row over all keys."""

    def on_attention(self, out: Outputs, index: int, attn: torch.Tensor, start: int = 0) -> None:
        if self.setting.geom.prefix > 0:
            out.add("attention/cls", attn[:, :, 0, :])


class SpatialAttention(PartRecorder):
    """``distance`` and ``attention_sums``, reduced in one pass over the spatial rows
    (:func:`vitscope.extract.fused.reduce_spatial`): the per-image mean distance, and
    the float64 sums over images (CLS row, spatial rows, sink statistics) with the count
    of zero-mass rows (docs/attention.md). Per-image values are computed in the model's
    precision; sums over images accumulate in float64."""

    def __init__(self, setting: Setting) -> None:
        super().__init__(setting)
        geom, device = setting.geom, setting.device
        L, H, T = geom.blocks, geom.heads, geom.tokens  # noqa: N806
        self.distance = "distance" in setting.products
        g = geom.grid[0] * geom.grid[1] if "attention_sums" in setting.products else 0  # no accumulators unless asked
        self.cls_sum = torch.zeros(L, H, T if g else 0, dtype=torch.float64, device=device)
        self.spatial_sum = torch.zeros(L, H, g, g, dtype=torch.float64, device=device)
        #: (L, H) spatial rows with zero spatial mass, over images (docs/attention.md)
        self.zero_rows = torch.zeros(L, H if geom.prefix > 0 else 0, dtype=torch.int64, device=device)
        #: (L, H, P + 1) sums over images of the sink statistics (:func:`.reductions.sink_statistics`)
        self.sink_sum = torch.zeros(L, H, geom.prefix + 1 if g else 0, dtype=torch.float64, device=device)
        self.dist32 = metrics.distance_matrix(geom.grid, device=device).float()
        #: the sums above are the current batch's; the batches' sums are added in a fixed tree
        #: over the batch index (:class:`.shards.TreeSum`), so a sharded run adds the same
        self.trees = {key: TreeSum() for key in SUMS}
        #: the fed-order index of the current batch (-1: none yet)
        self.group = setting.start // max(1, getattr(setting.options, "batch_size", 1)) - 1
        self.open = False

    def start_batch(self, positions: np.ndarray, objects: Sequence[ImageObjects] | None) -> None:
        self._close()
        self.group += 1
        self.open = True

    def _close(self) -> None:
        """The current batch's sums into the trees; new zero sums for the next."""
        if self.open:
            for key, tree in self.trees.items():
                tree.push(self.group, getattr(self, key))
                setattr(self, key, torch.zeros_like(getattr(self, key)))
            self.open = False

    def totals(self) -> dict[str, torch.Tensor]:
        """The sums over every image so far (the trees with the current batch pushed; unchanged)."""
        totals = {}
        for key, tree in self.trees.items():
            tree = tree.copy()
            if self.open:
                tree.push(self.group, getattr(self, key))
            totals[key] = tree.total(getattr(self, key))
        return totals

    def announce(self, log: Logger) -> None:
        fast = fused.available(self.setting.device)
        how = "fused Triton kernel" if fast else "torch (no Triton kernel on this device)"
        log.info("attention reductions: %s", how)

    def on_attention(self, out: Outputs, index: int, attn: torch.Tensor, start: int = 0) -> None:
        p = self.setting.geom.prefix
        cls_row = attn[:, :, 0, :] if p > 0 else None
        accumulate = "attention_sums" in self.setting.products and cls_row is not None
        if self.distance or accumulate:
            # spatial rows renormalised (B, H, G, G): per-query distance (B, H, G) and
            # the float64 sum over images, in one pass on CUDA (vitscope.extract.fused)
            per_query = fused.reduce_spatial(
                attn, p, self.dist32, self.spatial_sum[index] if accumulate else None, self.distance,
                self.zero_rows[index] if p > 0 else None,
            )
            if per_query is not None:
                # zero-mass rows (NaN) are left out of each image's mean (docs/attention.md)
                out.add("attention/distance", per_query.to(torch.float64).nanmean(dim=-1))
            if accumulate:
                reductions.accumulate(self.cls_sum[index], cls_row)
                reductions.accumulate(self.sink_sum[index], reductions.sink_statistics(attn, p))

    def kept(self) -> dict[str, torch.Tensor]:
        return attention_sum_datasets(self.totals(), self.setting.geom.grid, "attention_sums" in self.setting.products)

    def finish(self, writer: dumps.DumpWriter) -> None:
        geom = self.setting.geom
        self._close()
        if self.setting.shard:  # the merge folds every shard's nodes (vitscope.extract.merge.merge)
            for key, tree in self.trees.items():
                tree.write(writer.handle, key)
            return
        # on the host, so the sums and what follows from them do not depend on the device
        totals = {key: value.cpu() for key, value in self.totals().items()}
        for name, value in attention_sum_datasets(totals, geom.grid, "attention_sums" in self.setting.products).items():
            writer.put(name, value.numpy())
        if "attention_sums" in self.setting.products:
            writer.attrs({"count": self.setting.images, "queries": geom.grid[0] * geom.grid[1]}, group="attention")


#: the sums over images :class:`SpatialAttention` keeps (its attributes), each in a :class:`.shards.TreeSum`
SUMS = ("cls_sum", "spatial_sum", "zero_rows", "sink_sum")


def attention_sum_datasets(
    totals: dict[str, torch.Tensor], grid: tuple[int, int], sums: bool
) -> dict[str, torch.Tensor]:
    """The dump datasets of :class:`SpatialAttention`'s sums over images (:data:`SUMS`:
    cls_sum (L, H, T), spatial_sum (L, H, G, G), sink_sum (L, H, P + 1), zero_rows (L, H)),
    by dataset name; ``sums``: the product ``attention_sums`` is recorded. The unsharded run
    and the merge of shards (:func:`.merge.merge`) both write these."""
    out = {}
    if sums:
        out["attention/cls_sum"] = totals["cls_sum"]
        out["attention/aligned_sum"] = metrics.align(totals["spatial_sum"], grid)
        out["attention/spatial_query_sum"] = totals["spatial_sum"].sum(dim=-2)
        out["attention/sink_sum"] = totals["sink_sum"]
    if totals["zero_rows"].numel():
        out["attention/zero_mass_rows"] = totals["zero_rows"]
    return out


def exemplar_positions(n: int, count: int) -> np.ndarray:
    """``count`` positions spread evenly over the index (first and last included)."""
    if count <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(np.int64))


class Exemplars(PartRecorder):
    """``exemplars``: the full attention maps of ``extract.exemplars`` images spread over the index."""

    def __init__(self, setting: Setting) -> None:
        super().__init__(setting)
        spread = exemplar_positions(setting.images, setting.options.exemplars)
        # those among the images fed (all of them unless a shard; :mod:`.shards`)
        self.positions = spread[np.isin(spread, setting.order)] if setting.shard else spread
        self.wanted = frozenset(int(p) for p in self.positions)
        #: (row in batch, dataset position) of the exemplar images in this batch
        self.rows: list[tuple[int, int]] = []
        self.maps: dict[int, list[torch.Tensor]] = {}

    def sizes(self) -> dict[str, int]:
        return {"exemplars": len(self.positions)}

    def start_batch(self, positions: np.ndarray, objects: Sequence[ImageObjects] | None) -> None:
        self.rows = [(r, int(p)) for r, p in enumerate(positions) if int(p) in self.wanted]

    def on_attention(self, out: Outputs, index: int, attn: torch.Tensor, start: int = 0) -> None:
        for row, pos in self.rows:
            if start <= row < start + attn.shape[0]:
                # a copy (a view would keep the whole batch's attention alive), kept on the
                # device until the end: a copy to the host here would stall the pipeline
                self.maps.setdefault(pos, []).append(attn[row - start].to(torch.float32, copy=True))

    def finish(self, writer: dumps.DumpWriter) -> None:
        writer.put("exemplars/position", self.positions)
        for e, pos in enumerate(self.positions.tolist()):
            writer.handle["exemplars/attention"][e] = torch.stack(self.maps[pos]).cpu().numpy()


# --------------------------------------------------------------------------- Gram matrices


def cka_partition(order: np.ndarray, batch: int) -> np.ndarray:
    """(M, b) dataset positions of the CKA minibatches: consecutive runs of ``order``.

    The last ``n mod b`` images of the order form no minibatch.
    """
    m = len(order) // batch
    return order[: m * batch].reshape(m, batch)


class Grams(PartRecorder):
    """``gram``: per CKA minibatch (consecutive runs of the fed order), the Gram matrices
    of the block and LayerNorm outputs (:func:`.reductions.minibatch_grams`)."""

    def __init__(self, setting: Setting) -> None:
        super().__init__(setting)
        self.batch = setting.options.cka_batch_size
        self.partition = cka_partition(setting.order, self.batch)
        #: the float64 buffer :func:`.reductions.minibatch_grams` centres every point's features in
        self.workspace: dict = {}

    def sizes(self) -> dict[str, int]:
        return {"minibatches": len(self.partition), "minibatch": self.batch}

    def _add(self, out: Outputs, group: str, x: torch.Tensor) -> None:
        """(B, T, D) -> {rep: (chunks, b, b)}: :func:`.reductions.minibatch_grams` of this batch."""
        for name, value in reductions.minibatch_grams(x, self.batch, self.setting.geom.prefix, self.workspace).items():
            out.add(f"cka/{group}/{name}", value)

    def on_block(self, out: Outputs, index: int, x: torch.Tensor) -> None:
        self._add(out, "blocks", x)

    def on_norm(self, out: Outputs, point: int, x: torch.Tensor) -> None:
        self._add(out, "norms", x)

    def finish(self, writer: dumps.DumpWriter) -> None:
        writer.put("cka/index", self.partition)
        writer.attrs({"batch_size": self.batch, "order_seed": self.setting.options.order_seed}, group="cka")


# --------------------------------------------------------------------------- objects


class Objects(PartRecorder):
    """``objects``: per annotated object, the mask-weighted mean of the block output's
    spatial tokens; the weights are prepared on the host (:mod:`vitscope.features.objects`),
    one batched matmul per block."""

    def __init__(self, setting: Setting) -> None:
        super().__init__(setting)
        #: (B, O_max, G) object weights of each image (zero rows pad) and the (O,) rows of
        #: the flattened (B * O_max) products that are real objects, on the device
        self.weights: torch.Tensor | None = None
        self.rows: torch.Tensor | None = None
        self.found: list[ImageObjects] = []  # the objects of every image, in the order fed

    def start_batch(self, positions: np.ndarray, objects: Sequence[ImageObjects] | None) -> None:
        self.weights = self.rows = None
        if objects is not None:
            weights, rows = reductions.object_batch(objects, self.setting.geom.grid[0] * self.setting.geom.grid[1])
            self.weights = weights.to(self.setting.device, non_blocking=True)
            self.rows = rows.to(self.setting.device, non_blocking=True)
            self.found += [o.index_only() for o in objects]

    def on_block(self, out: Outputs, index: int, x: torch.Tensor) -> None:
        if self.weights is not None:
            # (B, O_max, G) @ (B, G, D) -> (B * O_max, D), padding rows dropped
            pooled = torch.bmm(self.weights, x[:, self.setting.geom.prefix :].float()).flatten(0, 1)
            out.add("objects/features", pooled.index_select(0, self.rows))

    def finish(self, writer: dumps.DumpWriter) -> None:
        """The per-object index of ``objects/features`` (rows in the order the images were fed)."""
        found, order = self.found, self.setting.order
        names = self.setting.objects.category_names() if self.setting.objects is not None else {}
        image = np.concatenate([np.full(o.count, pos, np.int64) for o, pos in zip(found, order, strict=True)])
        category = np.concatenate([o.category for o in found]).astype(np.int64)
        writer.put("objects/image", image)
        writer.put("objects/category", category)
        writer.put("objects/annotation", np.concatenate([o.annotation for o in found]).astype(np.int64))
        writer.put("objects/category_name", np.array([names.get(int(c), str(c)) for c in category], dtype=object))
        empty, crowd = sum(o.empty for o in found), sum(o.crowd for o in found)
        writer.attrs(
            {
                "objects": len(image),
                "annotations": len(image) + empty + crowd,
                "skipped_empty": empty,
                "skipped_crowd": crowd,
                "categories": len(np.unique(category)),
                "weighting": "instance mask mapped like the image, area-averaged per token, normalised to sum 1",
            },
            group="objects",
        )


# --------------------------------------------------------------------------- the recorder


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
        #: images per chunk of the blockwise attention path (:mod:`.blockwise`), None: explicit path
        self.chunk_rows = (
            blockwise.chunk_rows(setting.geom.heads, setting.geom.tokens, setting.options.batch_size, setting.device)
            if getattr(setting.options, "attention", "blockwise") == "blockwise"
            else None
        )
        #: what the parts added for the chunks of the current block's attention so far
        self._chunks = Outputs()
        #: the hooks compute in float32 or wider whatever ``extract.precision`` is: autocast off
        #: (:func:`.precision.exact`), low-precision inputs copied to float32
        self.precision = getattr(setting.options, "precision", "fp32")
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
                self.handles.append(blockwise.tap(block.attn, self._attn_hook(index), self.chunk_rows))
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
                with precision.exact(self.precision, output.device):
                    output = _wide(output)
                    for part in self._blocks:
                        part.on_block(self.batch, index, output)

        return hook

    def _norm_hook(self, point: int):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if self.active:
                with precision.exact(self.precision, output.device):
                    output = _wide(output)
                    for part in self._norms:
                        part.on_norm(self.batch, point, output)

        return hook

    def _attn_hook(self, index: int) -> blockwise.Listener:
        def listener(probs: torch.Tensor, start: int, total: int) -> None:
            if not self.active:
                return
            if start == 0:
                self.attn_calls[index] += 1
            whole = start == 0 and probs.shape[0] == total
            out = self.batch if whole else self._chunks
            with precision.exact(self.precision, probs.device):
                probs = _wide(probs)
                for part in self._attns:
                    part.on_attention(out, index, probs, start)
            if not whole and start + probs.shape[0] == total:  # the block's last chunk
                for name, values in self._chunks.out.items():
                    self.batch.out.setdefault(name, []).append(values[0] if len(values) == 1 else torch.cat(values))
                self._chunks = Outputs()

        return listener

    # ----------------------------------------------------------------- batches
    def start_batch(self, positions: np.ndarray, objects: Sequence[ImageObjects] | None = None) -> None:
        """Tell the parts the coming batch's positions and objects (decided on the host,
        so the hooks never synchronise with the device)."""
        self.batch = Outputs()
        self._chunks = Outputs()
        for part in self.parts.values():
            part.start_batch(positions, objects)

    def outputs(self) -> dict[str, torch.Tensor]:
        """The batch's per-batch products stacked over blocks, on the device.

        Per-image products: (B, L, ...); Gram matrices: (chunks, points, b, b).
        """
        return {name: torch.stack(values, dim=1) for name, values in self.batch.out.items()}

    def compared(self) -> dict[str, torch.Tensor]:
        """:meth:`outputs` and what every part keeps (:meth:`PartRecorder.kept`), by dump
        dataset, on the device: what the precision check compares after the first batch."""
        out = self.outputs()
        for part in self.parts.values():
            out.update(part.kept())
        return out

    def take(self) -> dict[str, torch.Tensor]:
        """:meth:`outputs` on their way to the host; resets the batch.

        From an accelerator the copies are asynchronous (pinned memory): wait for the
        returned batch's event before reading them (see :class:`vitscope.extract.run._HostBatch`).
        """
        out = {name: value.to("cpu", non_blocking=True) for name, value in self.outputs().items()}
        self.batch = Outputs()
        return out


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself, or a float32 copy of a bfloat16 / float16 ``x`` (what a hook sees under autocast)."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
