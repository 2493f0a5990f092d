"""The dump products the extraction records, registered in one place (docs/dumps.md).

A product is its layout in the dump format (:class:`vitscope.io.dumps.ProductLayout`:
datasets, shapes, dtypes, what it needs) and the :class:`~vitscope.extract.hooks.PartRecorder`
that records it during the pass: :class:`Product`, added with :func:`register_product`.
The pass loop (:mod:`.run`) and the :class:`~vitscope.extract.hooks.Recorder` know no
product by name: they create the datasets of the layout, call the hooks of the
parts, write each batch's outputs by the kind of their rows and let each part write
what it kept after the pass.

Order: the hooks of the parts run in the order of registration here (which sets the
order of a batch's writes); the datasets created before the pass and the writes after it
follow :data:`vitscope.io.dumps.LAYOUTS` (the order of the file).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from logging import Logger
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..attention import metrics
from ..errors import ConfigError
from ..io import dumps
from . import fused, reductions
from .hooks import Outputs, PartRecorder, Setting

if TYPE_CHECKING:
    from ..features.objects import ImageObjects


@dataclass(frozen=True)
class Product:
    """One dump product: ``layout`` (its datasets in the dump) and ``recorder``, the part
    recorder class that records it (products reduced in one pass share one class: it is
    created once per extraction). ``needs_cls``: refused for models without a CLS token;
    ``permuted``: the images are fed in a seeded permutation
    (``extract.order_seed``); ``check``: validates the ExtractOptions when the product is asked for."""

    layout: dumps.ProductLayout
    recorder: type[PartRecorder]
    needs_cls: bool = False
    permuted: bool = False
    check: Callable[[Any], None] | None = None

    @property
    def name(self) -> str:
        return self.layout.name


#: every product the extraction can record, in the order their hooks run
PRODUCTS: dict[str, Product] = {}


def register_product(product: Product) -> Product:
    """Add ``product`` (and its layout, to :data:`vitscope.io.dumps.LAYOUTS` if new there)."""
    if product.name in PRODUCTS:
        raise ValueError(f"product {product.name!r} is already registered")
    if product.recorder.on_attention is not PartRecorder.on_attention and not product.layout.attention:
        raise ValueError(f"product {product.name!r}: its recorder reads attention, its layout says attention=False")
    dumps.register_layout(product.layout)
    PRODUCTS[product.name] = product
    return product


def unregister_product(name: str) -> None:
    """Remove a product added by :func:`register_product`, and its layout (tests)."""
    PRODUCTS.pop(name)
    dumps.unregister_layout(name)


def known() -> list[str]:
    """The names of the registered products, in the order of the dump format."""
    return [name for name in dumps.PRODUCTS if name in PRODUCTS]


def parts(names: Iterable[str], order: Sequence[str] | None = None) -> list[type[PartRecorder]]:
    """The recorder classes of the products ``names``, each once: in the order of
    registration (the hooks' order), or of ``order`` (names)."""
    wanted = set(names)
    out: dict[type[PartRecorder], None] = {}
    for name in order if order is not None else PRODUCTS:
        if name in wanted:
            out.setdefault(PRODUCTS[name].recorder, None)
    return list(out)


# --------------------------------------------------------------------------- tokens


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

    def on_attention(self, out: Outputs, index: int, attn: torch.Tensor) -> None:
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

    def announce(self, log: Logger) -> None:
        fast = fused.available(self.setting.device)
        how = "fused Triton kernel" if fast else "torch (no Triton kernel on this device)"
        log.info("attention reductions: %s", how)

    def on_attention(self, out: Outputs, index: int, attn: torch.Tensor) -> None:
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

    def finish(self, writer: dumps.DumpWriter) -> None:
        geom = self.setting.geom
        if "attention_sums" in self.setting.products:
            writer.put("attention/cls_sum", self.cls_sum.cpu().numpy())
            writer.put("attention/aligned_sum", metrics.align(self.spatial_sum, geom.grid).cpu().numpy())
            writer.put("attention/spatial_query_sum", self.spatial_sum.sum(dim=-2).cpu().numpy())
            writer.put("attention/sink_sum", self.sink_sum.cpu().numpy())
            writer.attrs({"count": self.setting.images, "queries": geom.grid[0] * geom.grid[1]}, group="attention")
        if self.zero_rows.numel():
            writer.put("attention/zero_mass_rows", self.zero_rows.cpu().numpy())


def exemplar_positions(n: int, count: int) -> np.ndarray:
    """``count`` positions spread evenly over the index (first and last included)."""
    if count <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(np.int64))


class Exemplars(PartRecorder):
    """``exemplars``: the full attention maps of ``extract.exemplars`` images spread over the index."""

    def __init__(self, setting: Setting) -> None:
        super().__init__(setting)
        self.positions = exemplar_positions(setting.images, setting.options.exemplars)
        self.wanted = frozenset(int(p) for p in self.positions)
        #: (row in batch, dataset position) of the exemplar images in this batch
        self.rows: list[tuple[int, int]] = []
        self.maps: dict[int, list[torch.Tensor]] = {}

    def sizes(self) -> dict[str, int]:
        return {"exemplars": len(self.positions)}

    def start_batch(self, positions: np.ndarray, objects: Sequence[ImageObjects] | None) -> None:
        self.rows = [(r, int(p)) for r, p in enumerate(positions) if int(p) in self.wanted]

    def on_attention(self, out: Outputs, index: int, attn: torch.Tensor) -> None:
        for row, pos in self.rows:
            # a copy (a view would keep the whole batch's attention alive), kept on the
            # device until the end: a copy to the host here would stall the pipeline
            self.maps.setdefault(pos, []).append(attn[row].to(torch.float32, copy=True))

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


def _check_gram(options: Any) -> None:
    if options.cka_batch_size < 4:
        raise ConfigError(f"extract.cka_batch_size = {options.cka_batch_size} must be >= 4 (HSIC1 needs n > 3)")
    if options.batch_size % options.cka_batch_size:
        raise ConfigError(
            f"extract.batch_size = {options.batch_size} must be a multiple of "
            f"extract.cka_batch_size = {options.cka_batch_size}"
        )


class Grams(PartRecorder):
    """``gram``: per CKA minibatch (consecutive runs of the fed order), the Gram matrices
    of the block and LayerNorm outputs (:func:`.reductions.minibatch_grams`)."""

    def __init__(self, setting: Setting) -> None:
        super().__init__(setting)
        self.batch = setting.options.cka_batch_size
        self.partition = cka_partition(setting.order, self.batch)

    def sizes(self) -> dict[str, int]:
        return {"minibatches": len(self.partition), "minibatch": self.batch}

    def _add(self, out: Outputs, group: str, x: torch.Tensor) -> None:
        """(B, T, D) -> {rep: (chunks, b, b)}: :func:`.reductions.minibatch_grams` of this batch."""
        for name, value in reductions.minibatch_grams(x, self.batch, self.setting.geom.prefix).items():
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


# --------------------------------------------------------------------------- the registry

# hooks run in this order: objects before gram (the order of a batch's writes)
for _product in (
    Product(dumps.LAYOUTS["tokens"], Tokens),
    Product(dumps.LAYOUTS["cls_attention"], ClsAttention, needs_cls=True),
    Product(dumps.LAYOUTS["distance"], SpatialAttention),
    Product(dumps.LAYOUTS["attention_sums"], SpatialAttention, needs_cls=True),
    Product(dumps.LAYOUTS["exemplars"], Exemplars),
    Product(dumps.LAYOUTS["objects"], Objects),
    Product(dumps.LAYOUTS["gram"], Grams, permuted=True, check=_check_gram),
):
    register_product(_product)
