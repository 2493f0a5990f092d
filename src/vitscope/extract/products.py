"""The dump products the extraction records, registered in one place (docs/dumps.md).

A product is its layout in the dump format (:class:`vitscope.io.dumps.ProductLayout`:
datasets, shapes, dtypes, what it needs) and the :class:`~vitscope.extract.hooks.PartRecorder`
that records it during the pass (the built-in ones are in :mod:`.hooks`):
:class:`Product`, added with :func:`register_product`.
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
from typing import Any

from ..errors import ConfigError
from ..io import dumps
from .hooks import ClsAttention, Exemplars, Grams, Objects, PartRecorder, SpatialAttention, Tokens


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


# --------------------------------------------------------------------------- the built-in products


def _check_gram(options: Any) -> None:
    if options.cka_batch_size < 4:
        raise ConfigError(f"extract.cka_batch_size = {options.cka_batch_size} must be >= 4 (HSIC1 needs n > 3)")
    if options.batch_size % options.cka_batch_size:
        raise ConfigError(
            f"extract.batch_size = {options.batch_size} must be a multiple of "
            f"extract.cka_batch_size = {options.cka_batch_size}"
        )


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
