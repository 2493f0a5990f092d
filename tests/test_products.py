"""The product registry (vitscope.extract.products) and the dump format's layout table
(vitscope.io.dumps.LAYOUTS) agree, and a product registered from outside the package (a
toy: the per-image mean token norm of every block) is created, written and validated
without editing any vitscope module.

timm ``test_vit`` random models (6 blocks, 2 heads, width 64, patch 16) on tiny synthetic
ImageFolders, on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from test_dumps import make_folder

from vitscope.errors import ConfigError, DumpError
from vitscope.extract import hooks
from vitscope.extract import products as registry
from vitscope.extract import run as extract
from vitscope.io import datasets as data
from vitscope.io import dumps
from vitscope.io import preprocess as loading
from vitscope.models import registry as models

CPU = torch.device("cpu")
#: two registers: tokens/registers exists, so every kind of dataset of the layout is written
ENTRY = {"arch": "test_vit", "image_size": 64, "model_kwargs": {"reg_tokens": 2}}
ALL = ("tokens", "cls_attention", "distance", "attention_sums", "exemplars", "gram")


def build(entry: dict[str, Any] = ENTRY) -> tuple[models.ModelSpec, torch.nn.Module]:
    spec = models.spec_from_config("tiny", entry)
    model, report = models.build(spec)
    assert report.source == "random"
    return spec, model


def write(path: Path, entries: list[data.Entry], products: tuple[str, ...], entry: dict[str, Any] = ENTRY) -> None:
    """A dump as extract_dump writes it (checksummed, sealed), batches of 4, CKA minibatches of 4."""
    spec, model = build(entry)
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    meta = {"model": "tiny", "dataset": "synthetic", **{k: v for k, v in spec.describe().items() if k != "alias"}}
    options = extract.ExtractOptions(products=products, batch_size=4, cka_batch_size=4, exemplars=3)
    with dumps.create_file(path) as handle:
        extract.run(model, entries, transform, handle, options, CPU, meta)


@pytest.fixture(scope="module")
def entries(tmp_path_factory) -> list[data.Entry]:
    return make_folder(tmp_path_factory.mktemp("images"))  # 10 images: batches of 4, 4, 2


# --------------------------------------------------------------------------- the registry


def test_registry_and_layout_table_agree():
    """Every product of the dump format has a recorder and the other way round; each
    product's layout is the dump format's; the derived tables follow the layouts."""
    assert set(registry.PRODUCTS) == set(dumps.LAYOUTS) == set(dumps.PRODUCTS)
    assert registry.known() == list(dumps.PRODUCTS) == list(dumps.LAYOUTS)
    for name, product in registry.PRODUCTS.items():
        assert product.layout is dumps.LAYOUTS[name]
        assert issubclass(product.recorder, hooks.PartRecorder)
        reads = product.recorder.on_attention is not hooks.PartRecorder.on_attention
        assert not reads or product.layout.attention, name
    assert dumps.ATTENTION_PRODUCTS == {p for p, layout in dumps.LAYOUTS.items() if layout.attention}
    assert dumps.COCO_PRODUCTS == {"objects"}
    assert dumps.DEFAULT_PRODUCTS == tuple(p for p in dumps.PRODUCTS if p != "objects")
    assert dumps.PRODUCT_DATASETS["tokens"] == ("tokens/cls", "tokens/spatial_mean")  # registers: only when P > 1
    assert "attention/zero_mass_rows" not in {d for names in dumps.PRODUCT_DATASETS.values() for d in names}
    # distance and attention_sums are reduced in one pass, by one part recorder
    assert registry.parts(["distance", "attention_sums"]) == [hooks.SpatialAttention]
    # hooks in registration order (objects before gram), writes after the pass in the file's
    assert registry.parts(["gram", "objects"]) == [hooks.Objects, hooks.Grams]
    assert registry.parts(["gram", "objects"], order=dumps.PRODUCTS) == [hooks.Grams, hooks.Objects]


def test_a_dump_holds_what_the_layouts_say(entries, tmp_path):
    """A dump of every product of a plain image list: the datasets the extraction creates
    before the pass are those of the layouts (dtype given), with the layouts' shapes for
    the dump's sizes, and every dataset of the dump belongs to a product (or to images/)."""
    path = tmp_path / "all.h5"
    write(path, entries, ALL)
    with dumps.open_dump(path) as dump:
        names: list[str] = []
        dump.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        expected = dumps.expected_shapes(dump)
        geom = dumps.geometry(dump)
        counts = {"exemplars": len(dump["exemplars/position"]), "minibatches": dump["cka/index"].shape[0],
                  "minibatch": dump["cka/index"].shape[1]}
        stored = {n: (dump[n].shape, dump[n].dtype) for n in names}
    listed = {d.name for p in ALL for d in dumps.LAYOUTS[p].datasets}
    assert set(names) - listed == {"images/path", "images/label", "images/class"}
    assert listed - set(names) == set()  # P = 2 > 0: zero_mass_rows and registers too
    dims = dumps.Dims(images=len(entries), grid=geom["grid"], prefix=geom["prefix"], blocks=geom["blocks"],
                      heads=geom["heads"], width=geom["width"], **counts)
    created = extract.dataset_shapes(dims, frozenset(ALL))
    assert "tokens/registers" in created and "attention/cls_sum" not in created
    for name, (shape, dtype) in created.items():
        assert stored[name] == (shape, np.dtype(dtype)), name
        assert expected[name] == shape, name
    for name, shape in expected.items():
        assert name not in stored or stored[name][0] == shape, name


def test_register_product_refuses_inconsistent_products():
    class ReadsAttention(hooks.PartRecorder):
        def on_attention(self, out, index, attn):
            pass

    layout = dumps.ProductLayout("bad", (dumps.DatasetLayout("bad/x", lambda d: (d.images,), np.float32),))
    with pytest.raises(ValueError, match="reads attention"):
        registry.register_product(registry.Product(layout, ReadsAttention))
    with pytest.raises(ValueError, match="already registered"):
        registry.register_product(registry.PRODUCTS["tokens"])
    assert "bad" not in registry.PRODUCTS and "bad" not in dumps.LAYOUTS


# --------------------------------------------------------------------------- a product added from outside


class TokenNorm(hooks.PartRecorder):
    """Per image and block, the mean over all tokens of their L2 norm."""

    def on_block(self, out: hooks.Outputs, index: int, x: torch.Tensor) -> None:
        out.add("tokens/norm_mean", x.float().norm(dim=-1).mean(dim=1))


TOY = registry.Product(
    dumps.ProductLayout(
        "token_norm", (dumps.DatasetLayout("tokens/norm_mean", lambda d: (d.images, d.blocks), np.float32),)
    ),
    TokenNorm,
)


@pytest.fixture
def toy():
    registry.register_product(TOY)
    try:
        yield TOY
    finally:
        registry.unregister_product(TOY.name)


def reference_norms(entries: list[data.Entry]) -> np.ndarray:
    """(N, L) from our own forward hooks (fused attention, index order)."""
    spec, model = build()
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    images = torch.stack([transform(data.load_image(e.path)) for e in entries])
    found: dict[int, torch.Tensor] = {}

    def keep(i):
        def hook(module, args, output):
            found[i] = output.double().norm(dim=-1).mean(dim=1)

        return hook

    handles = [block.register_forward_hook(keep(i)) for i, block in enumerate(model.blocks)]
    try:
        with torch.inference_mode():
            model.forward_features(images)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([found[i] for i in range(len(found))], dim=1).numpy()


def test_a_registered_product_is_extracted_and_validated(toy, entries, tmp_path):
    assert "token_norm" in dumps.PRODUCTS and dumps.PRODUCT_DATASETS["token_norm"] == ("tokens/norm_mean",)
    assert "token_norm" not in dumps.ATTENTION_PRODUCTS
    path = tmp_path / "toy.h5"
    write(path, entries, ("tokens", "token_norm"))
    with dumps.open_dump(path) as dump:
        assert dumps.expected_shapes(dump)["tokens/norm_mean"] == (len(entries), 6)
        norms = dumps.require(dump, "tokens/norm_mean")
        assert norms.dtype == np.float32 and norms.fletcher32
        np.testing.assert_allclose(norms[...], reference_norms(entries), rtol=1e-5)
        assert sorted(dump.attrs["products"]) == ["token_norm", "tokens"]
        assert not dump.attrs["explicit_attention"]
    with h5py.File(path, "r+") as f:  # one row short: validate names it
        values = f["tokens/norm_mean"][...][:-1]
        del f["tokens/norm_mean"]
        dumps.create_dataset(f, "tokens/norm_mean", values.shape, values.dtype, data=values)
        dumps.seal(f)
    with pytest.raises(DumpError, match=r"dataset tokens/norm_mean has shape \(9, 6\), expected \(10, 6\)"):
        dumps.open_dump(path)


def test_a_registered_product_is_gone_once_unregistered(toy):
    extract.ExtractOptions(products=("token_norm",))
    registry.unregister_product(toy.name)
    try:
        assert "token_norm" not in dumps.PRODUCTS and "token_norm" not in dumps.PRODUCT_DATASETS
        with pytest.raises(ConfigError, match=r"unknown \['token_norm'\]"):
            extract.ExtractOptions(products=("token_norm",))
    finally:
        registry.register_product(toy)  # the fixture unregisters it
