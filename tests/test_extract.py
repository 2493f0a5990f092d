"""vitscope.extract.run checked against independent recomputation (docs/dumps.md).

Tiny synthetic ImageFolders and timm ``test_vit`` random models (6 blocks,
2 heads, width 64, patch 16). Every stored product is recomputed here without
vitscope's reductions:

- the attention reductions, in float64 slow loops, from the full maps stored
  under ``exemplars/attention`` (exemplars >= N, so every image is stored);
- the full maps themselves, from q and k read off each block's ``attn.qkv``
  output (softmax(q k^T * scale)), i.e. the hook reads the true probabilities;
- tokens and Gram matrices, from our own forward hooks on the blocks and on
  norm1/norm2, run with timm's fused attention, in index order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from vitscope.attention import metrics as attention
from vitscope.errors import ConfigError, ModelError, OutputError
from vitscope.extract import run as extract
from vitscope.io import datasets as data
from vitscope.io import dumps
from vitscope.io import preprocess as loading
from vitscope.models import registry as models

ENTRIES = {
    "square": {"arch": "test_vit", "image_size": 64},
    "wide": {"arch": "test_vit", "image_size": [48, 80]},
    "registers": {"arch": "test_vit", "image_size": 64, "model_kwargs": {"reg_tokens": 4}},
}
NO_CLS = {
    "arch": "test_vit",
    "image_size": 64,
    "model_kwargs": {"class_token": False, "global_pool": "avg"},
}
REPS = ("cls", "spatial", "all")
CPU = torch.device("cpu")


# --------------------------------------------------------------------------- fixtures and helpers


def make_folder(root: Path, counts: tuple[int, ...], seed: int = 0) -> list[data.Entry]:
    """``root/class_k/img_i.png``: random RGB images of varying sizes (some smaller than needed)."""
    rng = np.random.default_rng(seed)
    for k, count in enumerate(counts):
        folder = root / f"class_{k}"
        folder.mkdir(parents=True)
        for i in range(count):
            h, w = (int(v) for v in rng.integers(30, 110, size=2))
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"img_{i}.png")
    return data.index_imagefolder(root)


def build(entry: dict[str, Any], alias: str = "tiny") -> tuple[models.ModelSpec, torch.nn.Module]:
    spec = models.spec_from_config(alias, entry)
    model, report = models.build(spec)
    assert report.source == "random"
    return spec, model


def transform_of(spec: models.ModelSpec):
    return loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)


def read_all(path: Path) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Every dataset (path -> array) and every group's attributes (group -> dict)."""
    arrays: dict[str, np.ndarray] = {}
    attrs: dict[str, dict[str, Any]] = {}
    with h5py.File(path, "r") as f:
        attrs["/"] = dict(f.attrs)

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                arrays[name] = obj[()]
            else:
                attrs[name] = dict(obj.attrs)

        f.visititems(visit)
    return arrays, attrs


def extract_to(path: Path, model, spec, entries, **options) -> dict[str, Any]:
    with h5py.File(path, "w") as handle:
        return extract.run(
            model,
            entries,
            transform_of(spec),
            handle,
            extract.ExtractOptions(**options),
            CPU,
            {"model": spec.alias, "dataset": "synthetic"},
        )


def reference_forward(model, spec, entries) -> dict[str, np.ndarray]:
    """Our own forward (fused attention), hooks on blocks, norm1/norm2 and attn.qkv.

    Returns float64 arrays: blocks (N, L, T, D), norms (N, 2L, T, D) ordered
    block 1 norm1, block 1 norm2, ..., attention (N, L, H, T, T) recomputed from q, k.
    """
    images = torch.stack([transform_of(spec)(data.load_image(e.path)) for e in entries])
    n_blocks = len(model.blocks)
    blocks: dict[int, torch.Tensor] = {}
    norms: dict[int, torch.Tensor] = {}
    attn: dict[int, torch.Tensor] = {}
    handles = []

    def keep(store, key):
        def hook(module, args, output):
            store[key] = output.detach().to(torch.float64).clone()

        return hook

    def probs(block, key):
        def hook(module, args, output):
            b, t, _ = output.shape
            mod = block.attn
            qkv = output.reshape(b, t, 3, mod.num_heads, mod.head_dim).permute(2, 0, 3, 1, 4)
            q, k = mod.q_norm(qkv[0]), mod.k_norm(qkv[1])
            logits = (q.double() * mod.scale) @ k.double().transpose(-2, -1)
            attn[key] = logits.softmax(dim=-1)

        return hook

    models.set_fused_attention(model, True)
    for i, block in enumerate(model.blocks):
        handles.append(block.register_forward_hook(keep(blocks, i)))
        handles.append(block.norm1.register_forward_hook(keep(norms, 2 * i)))
        handles.append(block.norm2.register_forward_hook(keep(norms, 2 * i + 1)))
        handles.append(block.attn.qkv.register_forward_hook(probs(block, i)))
    try:
        with torch.inference_mode():
            model.forward_features(images)
    finally:
        for h in handles:
            h.remove()
    return {
        "images": images.numpy(),
        "blocks": torch.stack([blocks[i] for i in range(n_blocks)], dim=1).numpy(),
        "norms": torch.stack([norms[i] for i in range(2 * n_blocks)], dim=1).numpy(),
        "attention": torch.stack([attn[i] for i in range(n_blocks)], dim=1).numpy(),
    }


def representations(x: np.ndarray, prefix: int) -> dict[str, np.ndarray]:
    """x (n, T, D) -> cls (token 0, or spatial mean without CLS), spatial (P:), all (flattened)."""
    cls = x[:, 0] if prefix > 0 else x[:, prefix:].mean(axis=1)
    return {"cls": cls, "spatial": x[:, prefix:].reshape(len(x), -1), "all": x.reshape(len(x), -1)}


def assert_gram_close(got: np.ndarray, features: np.ndarray) -> None:
    """The dump's Grams are of the minibatch's centred features (docs/features.md)."""
    features = features - features.mean(axis=0, keepdims=True)
    want = features @ features.T
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


# slow float64 loops from the protocol text ------------------------------------------


def slow_rows(a: np.ndarray, prefix: int, g: int) -> list[list[float]]:
    rows = []
    for q in range(g):
        row = [float(a[prefix + q, prefix + k]) for k in range(g)]
        total = sum(row)
        rows.append([v / total for v in row])
    return rows


def slow_reductions(maps: np.ndarray, grid: tuple[int, int], prefix: int) -> dict[str, np.ndarray]:
    """From full maps (N, L, H, T, T): distance (N, L, H), cls_sum (L, H, T),
    aligned_sum (L, H, 2gh-1, 2gw-1), spatial_query_sum (L, H, G)."""
    n, n_blocks, heads, t, _ = maps.shape
    gh, gw = grid
    g = gh * gw
    unit = max(gh, gw) - 1
    distance = np.zeros((n, n_blocks, heads))
    cls_sum = np.zeros((n_blocks, heads, t))
    aligned = np.zeros((n_blocks, heads, 2 * gh - 1, 2 * gw - 1))
    query_sum = np.zeros((n_blocks, heads, g))
    for i in range(n):
        for b in range(n_blocks):
            for h in range(heads):
                a = maps[i, b, h].astype(np.float64)
                if prefix:
                    cls_sum[b, h] += a[0]
                rows = slow_rows(a, prefix, g)
                total = 0.0
                for q in range(g):
                    qi, qj = divmod(q, gw)
                    for k in range(g):
                        r, c = divmod(k, gw)
                        w = rows[q][k]
                        total += w * math.hypot((c - qj) / unit, (r - qi) / unit)
                        aligned[b, h, r - qi + gh - 1, c - qj + gw - 1] += w
                        query_sum[b, h, k] += w
                distance[i, b, h] = total / g
    return {
        "attention/distance": distance,
        "attention/cls_sum": cls_sum,
        "attention/aligned_sum": aligned,
        "attention/spatial_query_sum": query_sum,
    }


@dataclass
class Dumped:
    name: str
    spec: models.ModelSpec
    model: torch.nn.Module
    entries: list[data.Entry]
    path: Path
    arrays: dict[str, np.ndarray]
    attrs: dict[str, dict[str, Any]]
    ref: dict[str, np.ndarray]
    options: dict[str, Any]

    @property
    def prefix(self) -> int:
        return int(self.attrs["/"]["num_prefix_tokens"])

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(int(v) for v in self.attrs["/"]["grid"])  # type: ignore[return-value]


@pytest.fixture(scope="module")
def entries(tmp_path_factory) -> list[data.Entry]:
    # N = 14: not a multiple of batch_size 8 nor of cka_batch_size 4 (batches of 8 and 6)
    return make_folder(tmp_path_factory.mktemp("images"), (5, 5, 4), seed=0)


@pytest.fixture(scope="module", params=sorted(ENTRIES))
def dumped(request, entries, tmp_path_factory) -> Dumped:
    name = request.param
    spec, model = build(ENTRIES[name], alias=name)
    options = {
        "batch_size": 8,
        "cka_batch_size": 4,
        "exemplars": len(entries) + 3,
        "order_seed": 3,
    }
    path = tmp_path_factory.mktemp("dumps") / f"{name}.h5"
    extract_to(path, model, spec, entries, **options)
    arrays, attrs = read_all(path)
    ref = reference_forward(model, spec, entries)
    return Dumped(name, spec, model, entries, path, arrays, attrs, ref, options)


# --------------------------------------------------------------------------- all products


def test_layout_and_attributes(dumped: Dumped):
    a, root = dumped.arrays, dumped.attrs["/"]
    n, model = len(dumped.entries), dumped.model
    geom = models.geometry(model)
    assert [p.decode() if isinstance(p, bytes) else p for p in a["images/path"]] == [
        e.path for e in dumped.entries
    ]
    np.testing.assert_array_equal(a["images/label"], [e.label for e in dumped.entries])
    assert sorted(set(a["images/label"].tolist())) == [0, 1, 2]
    assert (
        tuple(root["grid"])
        == geom.grid
        == {"square": (4, 4), "registers": (4, 4), "wide": (3, 5)}[dumped.name]
    )
    assert root["num_prefix_tokens"] == (5 if dumped.name == "registers" else 1)
    assert (root["num_blocks"], root["num_heads"], root["width"]) == (6, 2, 64)
    assert bool(root["explicit_attention"]) is True
    assert 0 <= root["parity_max_abs_diff"] < 1e-4
    assert root["cls_source"] == "token 0"
    L, H, T, D = 6, 2, geom.tokens, 64  # noqa: N806
    assert a["tokens/cls"].shape == a["tokens/spatial_mean"].shape == (n, L, D)
    assert a["attention/cls"].shape == (n, L, H, T)
    assert a["attention/distance"].shape == (n, L, H)
    assert a["exemplars/attention"].shape == (n, L, H, T, T)
    np.testing.assert_array_equal(a["exemplars/position"], np.arange(n))
    assert ("tokens/registers" in a) == (dumped.name == "registers")
    att = dumped.attrs["attention"]
    assert att["count"] == n
    assert att["queries"] == geom.grid[0] * geom.grid[1]
    # the model is handed back on timm's fused path
    assert all(block.attn.fused_attn for block in model.blocks)


def test_exemplar_attention_is_softmax_of_q_k(dumped: Dumped):
    """The attn_drop hook reads the true probabilities: equal to softmax(q k^T * scale)
    recomputed in float64 from each block's qkv output (fused forward)."""
    maps = dumped.arrays["exemplars/attention"].astype(np.float64)
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(maps, dumped.ref["attention"], rtol=1e-4, atol=2e-6)


def test_attention_reductions_from_full_maps(dumped: Dumped):
    a = dumped.arrays
    maps = a["exemplars/attention"]
    np.testing.assert_array_equal(a["attention/cls"], maps[:, :, :, 0, :])
    want = slow_reductions(maps, dumped.grid, dumped.prefix)
    # per-image values (row renormalisation, distance) are computed in the model's float32;
    # only the sums over images are float64 (docs/dumps.md): ~1e-7 relative
    for name, value in want.items():
        assert a[name].dtype == np.float64, name
        rtol = 1e-10 if name == "attention/cls_sum" else 1e-6
        np.testing.assert_allclose(a[name], value, rtol=rtol, atol=1e-12, err_msg=name)
    # the documented averages: AAAM and spatial-query map sum to 1 per head, CLS map <= 1
    count, queries = dumped.attrs["attention"]["count"], dumped.attrs["attention"]["queries"]
    aaam = a["attention/aligned_sum"] / (count * queries)
    np.testing.assert_allclose(aaam.sum(axis=(-2, -1)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        (a["attention/spatial_query_sum"] / (count * queries)).sum(axis=-1), 1.0, rtol=1e-6
    )
    np.testing.assert_allclose((a["attention/cls_sum"] / count).sum(axis=-1), 1.0, rtol=1e-6)


def test_tokens_match_own_forward(dumped: Dumped):
    a, x, p = dumped.arrays, dumped.ref["blocks"], dumped.prefix
    np.testing.assert_allclose(a["tokens/cls"], x[:, :, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        a["tokens/spatial_mean"], x[:, :, p:].mean(axis=2), rtol=1e-4, atol=1e-5
    )
    if p > 1:
        assert a["tokens/registers"].shape == (len(dumped.entries), 6, p - 1, 64)
        np.testing.assert_allclose(a["tokens/registers"], x[:, :, 1:p], rtol=1e-4, atol=1e-5)


def test_cka_partition(dumped: Dumped):
    n, b, seed = len(dumped.entries), dumped.options["cka_batch_size"], dumped.options["order_seed"]
    index = dumped.arrays["cka/index"]
    m = n // b
    assert index.shape == (m, b) == (3, 4)
    np.testing.assert_array_equal(
        index.ravel(), np.random.default_rng(seed).permutation(n)[: m * b]
    )
    assert dumped.attrs["cka"]["batch_size"] == b
    assert dumped.attrs["cka"]["order_seed"] == seed


def test_grams_match_own_forward(dumped: Dumped):
    a, p = dumped.arrays, dumped.prefix
    index = a["cka/index"]
    n_blocks = 6
    for rep in REPS:
        assert a[f"cka/blocks/{rep}"].shape == (len(index), n_blocks, 4, 4)
        assert a[f"cka/norms/{rep}"].shape == (len(index), 2 * n_blocks, 4, 4)
    for m, rows in enumerate(index):
        for layer in range(n_blocks):
            feats = representations(dumped.ref["blocks"][rows, layer], p)
            for rep in REPS:
                assert_gram_close(a[f"cka/blocks/{rep}"][m, layer], feats[rep])
        for point in range(2 * n_blocks):
            feats = representations(dumped.ref["norms"][rows, point], p)
            for rep in REPS:
                assert_gram_close(a[f"cka/norms/{rep}"][m, point], feats[rep])


def test_explicit_attention_equals_fused_forward(dumped: Dumped):
    model, images = dumped.model, torch.from_numpy(dumped.ref["images"])
    calls = []
    handles = [
        blk.attn.attn_drop.register_forward_hook(lambda *args: calls.append(1))
        for blk in model.blocks
    ]
    try:
        with torch.inference_mode():
            assert models.set_fused_attention(model, True) == 6
            fused = model.forward_features(images)
            assert calls == []  # the fused path never materialises the probabilities
            assert models.set_fused_attention(model, False) == 6
            explicit = model.forward_features(images)
            assert len(calls) == 6
    finally:
        models.set_fused_attention(model, True)
        for h in handles:
            h.remove()
    torch.testing.assert_close(explicit, fused, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- subsets, determinism


def test_tokens_only_uses_fused_path(tmp_path, entries):
    spec, model = build(ENTRIES["square"])
    calls = []
    handles = [
        blk.attn.attn_drop.register_forward_hook(lambda *args: calls.append(1))
        for blk in model.blocks
    ]
    try:
        extract_to(tmp_path / "t.h5", model, spec, entries, products=("tokens",), batch_size=8)
    finally:
        for h in handles:
            h.remove()
    assert calls == []
    arrays, attrs = read_all(tmp_path / "t.h5")
    assert set(arrays) == {
        "images/path",
        "images/label",
        "images/class",
        "tokens/cls",
        "tokens/spatial_mean",
    }
    assert bool(attrs["/"]["explicit_attention"]) is False
    assert math.isnan(attrs["/"]["parity_max_abs_diff"])
    assert list(attrs["/"]["products"]) in (["tokens"], [b"tokens"])
    ref = reference_forward(model, spec, entries)["blocks"]
    np.testing.assert_allclose(arrays["tokens/cls"], ref[:, :, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        arrays["tokens/spatial_mean"], ref[:, :, 1:].mean(2), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(("tokens", "dtype"), [("cls", "float16"), ("spatial_mean", "float32"), ("both", "float16")])
def test_token_storage_keeps_what_is_asked_in_its_dtype(tmp_path, entries, tokens, dtype):
    """datasets.<name>.tokens / token_dtype: only the kept token datasets, stored as asked (float16 the
    float32 values rounded once), with every other product as before."""
    spec, model = build(ENTRIES["square"])
    options = {"products": ("tokens", "distance"), "batch_size": 8, "order_seed": 3}
    extract_to(tmp_path / "ref.h5", model, spec, entries, **options)
    extract_to(tmp_path / "t.h5", model, spec, entries, **options, tokens=tokens, token_dtype=dtype)
    ref, _ = read_all(tmp_path / "ref.h5")
    got, _ = read_all(tmp_path / "t.h5")
    kept = {"tokens/cls", "tokens/spatial_mean"} if tokens == "both" else {f"tokens/{tokens}"}
    assert set(got) == set(ref) - ({"tokens/cls", "tokens/spatial_mean"} - kept)
    for name in kept:
        assert got[name].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got[name], ref[name].astype(dtype))
    np.testing.assert_array_equal(got["attention/distance"], ref["attention/distance"])


def test_token_storage_is_checked():
    with pytest.raises(ConfigError, match="token_dtype"):
        extract.ExtractOptions(token_dtype="bfloat16")
    with pytest.raises(ConfigError, match="tokens"):
        extract.ExtractOptions(tokens="registers")


def test_float16_tokens_beyond_its_range_fail_with_the_dataset(tmp_path):
    with h5py.File(tmp_path / "d.h5", "w") as handle:
        writer = dumps.DumpWriter(handle, 2, {"tokens/cls": ((2, 1, 3), np.float16)})
        with pytest.raises(OutputError, match=r"tokens/cls .*float16 range"):
            writer.write(np.arange(2), {"tokens/cls": np.array([[[1.0, 7e4, 0.0]]] * 2, np.float32)})


@pytest.mark.parametrize("name", ["wide", "registers"])
def test_two_extractions_are_identical(tmp_path, entries, name):
    options = {"batch_size": 8, "cka_batch_size": 4, "exemplars": 3}
    outputs = []
    for run in range(2):
        spec, model = build(ENTRIES[name])  # rebuilt: the seeded build is deterministic too
        extract_to(tmp_path / f"{run}.h5", model, spec, entries, **options)
        outputs.append(read_all(tmp_path / f"{run}.h5"))
    (a1, t1), (a2, t2) = outputs
    assert sorted(a1) == sorted(a2)
    for key in a1:
        np.testing.assert_array_equal(a1[key], a2[key], err_msg=key)
    assert sorted(t1) == sorted(t2)
    for group in t1:
        assert sorted(t1[group]) == sorted(t2[group])
        for key, value in t1[group].items():
            np.testing.assert_array_equal(value, t2[group][key], err_msg=f"{group}.{key}")


def test_warm_up_batch_leaves_no_trace(tmp_path, entries, monkeypatch):
    """The warm-up batch (CUDA only; forced here on the CPU) runs every hook and
    reduction on random images through a recorder of its own: the dump is
    bit-identical to one extracted without it."""
    options = {"batch_size": 8, "cka_batch_size": 4, "exemplars": 3}
    calls = []
    real = extract._warm_up
    outputs = []
    for warm in (False, True):
        monkeypatch.setattr(extract, "_wants_warm_up", lambda device, warm=warm: warm)
        monkeypatch.setattr(extract, "_warm_up", lambda *a: (calls.append(a), real(*a)))
        spec, model = build(ENTRIES["registers"])
        extract_to(tmp_path / f"{warm}.h5", model, spec, entries, **options)
        outputs.append(read_all(tmp_path / f"{warm}.h5"))
    assert len(calls) == 1
    (a1, t1), (a2, t2) = outputs
    assert sorted(a1) == sorted(a2)
    for key in a1:
        np.testing.assert_array_equal(a1[key], a2[key], err_msg=key)
    for group in t1:
        for key, value in t1[group].items():
            np.testing.assert_array_equal(value, t2[group][key], err_msg=f"{group}.{key}")


def test_warm_up_only_on_cuda():
    assert extract._wants_warm_up(torch.device("cuda"))
    assert not extract._wants_warm_up(CPU)


@pytest.mark.parametrize("batch_size,cka_batch_size", [(4, 4), (12, 4), (8, 8)])
def test_last_batch_smaller_than_cka_batch(tmp_path, entries, batch_size, cka_batch_size):
    """N = 14: the last batch (2, 2 and 6 images) holds fewer than cka_batch_size images;
    it forms no minibatch, and the others are all written (14 // b of them)."""
    spec, model = build(ENTRIES["square"])
    extract_to(
        tmp_path / "d.h5",
        model,
        spec,
        entries,
        products=("tokens", "gram"),
        batch_size=batch_size,
        cka_batch_size=cka_batch_size,
    )
    arrays, _ = read_all(tmp_path / "d.h5")
    b = cka_batch_size
    assert arrays["cka/index"].shape == (len(entries) // b, b)
    np.testing.assert_array_equal(
        arrays["cka/index"].ravel(),
        np.random.default_rng(0).permutation(len(entries))[: len(entries) // b * b],
    )
    ref = reference_forward(model, spec, entries)
    for m, rows in enumerate(arrays["cka/index"]):
        for layer in (0, 5):
            feats = representations(ref["blocks"][rows, layer], prefix=1)
            for rep in REPS:
                assert_gram_close(arrays[f"cka/blocks/{rep}"][m, layer], feats[rep])
        feats = representations(ref["norms"][rows, 11], prefix=1)
        assert_gram_close(arrays["cka/norms/all"][m, 11], feats["all"])


def test_fewer_images_than_cka_batch(tmp_path, entries):
    """N = 3 < b = 4: no minibatch at all (M = 0), per-image products still written."""
    spec, model = build(ENTRIES["square"])
    extract_to(tmp_path / "d.h5", model, spec, entries[:3], batch_size=4, cka_batch_size=4)
    arrays, _ = read_all(tmp_path / "d.h5")
    assert arrays["cka/index"].shape == (0, 4)
    assert arrays["cka/blocks/all"].shape == (0, 6, 4, 4)
    assert arrays["tokens/cls"].shape == (3, 6, 64)


def test_dump_summaries_from_full_maps(dumped: Dumped):
    """attention.averaged_maps and distance_summary applied to the dump's sums equal
    averages computed here from the full maps."""

    a, p, grid = dumped.arrays, dumped.prefix, dumped.grid
    gh, gw = grid
    count, queries = dumped.attrs["attention"]["count"], dumped.attrs["attention"]["queries"]
    cls, spatial = attention.averaged_maps(
        torch.from_numpy(a["attention/cls_sum"]),
        torch.from_numpy(a["attention/spatial_query_sum"]),
        int(count),
        int(queries),
        grid,
        p,
    )
    maps = a["exemplars/attention"].astype(np.float64)
    n, n_blocks, heads = maps.shape[:3]
    want_cls = np.zeros((n_blocks, heads, gh, gw))
    want_spatial = np.zeros((n_blocks, heads, gh, gw))
    for i in range(n):
        for b in range(n_blocks):
            for h in range(heads):
                rows = slow_rows(maps[i, b, h], p, gh * gw)
                for k in range(gh * gw):
                    r, c = divmod(k, gw)
                    want_cls[b, h, r, c] += maps[i, b, h, 0, p + k] / n
                    want_spatial[b, h, r, c] += sum(row[k] for row in rows) / (n * gh * gw)
    np.testing.assert_allclose(cls.numpy(), want_cls, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(spatial.numpy(), want_spatial, rtol=1e-6, atol=1e-13)  # float32 rows

    table = attention.distance_summary(torch.from_numpy(a["attention/distance"]), grid, patch=16)
    d = a["attention/distance"]
    assert len(table) == n_blocks * heads
    for row in table:
        b, h = row["block"] - 1, row["head"] - 1
        assert row["images"] == n
        assert row["distance_grid"] == pytest.approx(d[:, b, h].mean(), rel=1e-12)
        assert row["std_grid"] == pytest.approx(d[:, b, h].std(), rel=1e-12, abs=1e-15)
        assert row["distance_px"] == pytest.approx(d[:, b, h].mean() * (max(gh, gw) - 1) * 16)


# --------------------------------------------------------------------------- no CLS token


def test_register_model_geometry():
    spec, model = build(ENTRIES["registers"])
    geom = models.geometry(model)
    assert geom.prefix == 5
    assert geom.tokens == 5 + 16


@pytest.mark.parametrize("product", ["cls_attention", "attention_sums"])
def test_no_cls_model_refuses_cls_products(tmp_path, entries, product):
    spec, model = build(NO_CLS, alias="gap")
    assert models.geometry(model).prefix == 0
    with pytest.raises(ModelError, match=r"'gap'.*no CLS token.*" + product):
        extract_to(tmp_path / "d.h5", model, spec, entries, products=("tokens", product))


def test_no_cls_model_uses_spatial_mean(tmp_path, entries):
    spec, model = build(NO_CLS, alias="gap")
    extract_to(
        tmp_path / "d.h5",
        model,
        spec,
        entries,
        products=("tokens", "distance", "gram"),
        batch_size=8,
        cka_batch_size=4,
    )
    a, attrs = read_all(tmp_path / "d.h5")
    root = attrs["/"]
    assert "mean of spatial tokens" in root["cls_source"]
    assert root["num_prefix_tokens"] == 0
    assert bool(root["explicit_attention"]) is True
    assert "attention/cls" not in a and "exemplars/attention" not in a
    ref = reference_forward(model, spec, entries)
    x = ref["blocks"]
    np.testing.assert_array_equal(a["tokens/cls"], a["tokens/spatial_mean"])
    np.testing.assert_allclose(a["tokens/cls"], x.mean(axis=2), rtol=1e-4, atol=1e-5)
    for m, rows in enumerate(a["cka/index"]):
        for layer in range(6):
            feats = representations(x[rows, layer], prefix=0)
            for rep in REPS:
                assert_gram_close(a[f"cka/blocks/{rep}"][m, layer], feats[rep])
    # distance from our own q-k attention, no prefix to drop (rows already sum to 1)
    want = slow_reductions(ref["attention"], (4, 4), prefix=0)["attention/distance"]
    np.testing.assert_allclose(a["attention/distance"], want, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- non-finite values


def test_nan_parity_is_a_failure(tmp_path, entries, monkeypatch):
    """A NaN difference between the explicit and the fused forward fails (``nan > tolerance``
    is False, so it used to pass and print ``parity ... = nan``)."""
    spec, model = build(ENTRIES["square"])
    fused_forward = extract._fused_forward

    def nan_reference(*args):
        return torch.full_like(fused_forward(*args), math.nan)

    monkeypatch.setattr(extract, "_fused_forward", nan_reference)
    with pytest.raises(ModelError, match=r"model 'tiny', dataset 'synthetic': .* by nan \(the fused forward's tokens"):
        extract_to(tmp_path / "p.h5", model, spec, entries, batch_size=8, cka_batch_size=4)


def _overflowing(block: int) -> tuple[models.ModelSpec, torch.nn.Module]:
    """Finite weights whose activations overflow float32 at ``block`` (0-based): one row of
    its fc2 at 3e38 sums 4 * 64 hidden units into an infinity."""
    spec, model = build(ENTRIES["square"])
    with torch.no_grad():
        model.blocks[block].mlp.fc2.weight[0] = 3e38
    models.check_finite(model.state_dict(), "test")  # the weights are finite
    return spec, model


@pytest.mark.parametrize("products", [None, ("tokens",)])
def test_overflowing_tokens_name_model_dataset_image_and_block(tmp_path, entries, products):
    """Tokens that become NaN/Inf with finite weights fail naming model, dataset, image and the
    first bad block, on the explicit path (first batch, with the parity) and on the fused one."""
    spec, model = _overflowing(2)
    options = {"batch_size": 8, "cka_batch_size": 4, "order_seed": 3} | ({"products": products} if products else {})
    first = extract.image_order(len(entries), extract.ExtractOptions(**options))[0]
    with pytest.raises(ModelError) as err:
        extract_to(tmp_path / "o.h5", model, spec, entries, **options)
    text = str(err.value)
    assert "model 'tiny', dataset 'synthetic'" in text and f"'{entries[first].path}'" in text
    assert "8 of 8 images of its batch" in text and "block 3 of 6" in text and "overflow" in text
