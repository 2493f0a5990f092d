"""The stress model (vitscope.testing.stress) has the traits it claims, and the
extraction and every analysis of its dump stay finite and exact on it (issue 14).

Measured here, never assumed: (a) massive activations, (b) attention sinks on CLS and
the register with zero-mass spatial rows, (c) high-norm spatial tokens; then one
extraction of its dump: no NaN anywhere, the zero-mass rows counted, the reductions
equal to a float64 loop that applies the rule, the fused Triton kernel (CPU
interpreter) equal to the torch reductions, the sink statistics equal to their
definition, and minibatch CKA equal to a float64 CKA from the tokens to 1e-6.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_extract import read_all

from vitscope.attention import heads
from vitscope.attention import metrics as attention
from vitscope.extract import run as extract
from vitscope.features import cka as features
from vitscope.io import datasets as data
from vitscope.io import dumps
from vitscope.io import preprocess as loading
from vitscope.models import registry as models
from vitscope.testing import stress

CPU = torch.device("cpu")
P = 2  # CLS + one register


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, stress.IMAGE_SIZE, stress.IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


Maps = dict[int, torch.Tensor]


def explicit_forward(model: torch.nn.Module, x: torch.Tensor) -> tuple[Maps, Maps]:
    """Block outputs (N, T, D) and attention probabilities (N, H, T, T) of every block."""
    blocks: dict[int, torch.Tensor] = {}
    attn: dict[int, torch.Tensor] = {}
    handles = []
    for i, block in enumerate(model.blocks):
        handles.append(block.register_forward_hook(lambda m, a, o, i=i: blocks.__setitem__(i, o.clone())))
        handles.append(block.attn.attn_drop.register_forward_hook(lambda m, a, o, i=i: attn.__setitem__(i, o.clone())))
    models.set_fused_attention(model, False)
    try:
        with torch.inference_mode():
            model.forward_features(x)
    finally:
        models.set_fused_attention(model, True)
        for h in handles:
            h.remove()
    return blocks, attn


@pytest.fixture(scope="module")
def forward():
    model = stress.stress_vit()
    return model, *explicit_forward(model, images(8))


def test_stress_model_is_deterministic_and_has_a_register(forward):
    model, blocks, _ = forward
    geom = models.geometry(model)
    assert (geom.prefix, geom.grid, geom.blocks, geom.heads, geom.width) == (P, (4, 4), 6, 2, 64)
    again = stress.stress_vit()
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


def test_massive_activations(forward):
    """(a): from block 1's output on, the massive channels' mean |x| is >= 100x the median channel's."""
    _, blocks, _ = forward
    for index in range(6):
        magnitude = blocks[index].abs().mean(dim=(0, 1))
        ratio = magnitude[list(stress.MASSIVE_CHANNELS)].min() / magnitude.median()
        assert 100 <= ratio <= 5000, (index, float(ratio))
        others = torch.ones(64, dtype=torch.bool)
        others[list(stress.MASSIVE_CHANNELS) + [stress.NORM_CHANNEL]] = False  # NORM_CHANNEL: trait (c)
        assert magnitude[others].max() < magnitude[list(stress.MASSIVE_CHANNELS)].min() / 20


def test_attention_sinks_and_zero_mass_rows(forward):
    """(b): block 1 head 1 puts >= 0.999999 of every spatial query's mass on CLS, head 2 on
    the register; some rows of head 1 have spatial mass exactly 0 in float32, others not."""
    _, _, attn = forward
    a = attn[0]
    assert (a[:, 0, P:, 0] >= 0.999999).all()
    assert (a[:, 1, P:, 1] >= 0.999999).all()
    mass = a[:, :, P:, P:].sum(dim=-1)  # (N, H, G)
    zero = mass == 0
    assert zero[:, 0].float().mean() > 0.3 and (~zero[:, 0]).any()
    assert not zero[:, 1].any() and (mass[:, 1] > 0).all()
    assert (~zero[:, 0]).any(dim=-1).all()  # every image keeps a query with spatial mass


def test_high_norm_spatial_tokens(forward):
    """(c): the high-norm spatial tokens' norm is >= 10x the median spatial token's, at every block."""
    _, blocks, _ = forward
    for index in range(6):
        norms = blocks[index][:, P:].norm(dim=-1)  # (N, G)
        ratio = norms[:, list(stress.HIGH_NORM_TOKENS)].min() / norms.median()
        assert ratio >= 10, (index, float(ratio))


def test_checkpoint_loads_through_the_config_entry(tmp_path):
    path = stress.write_stress_checkpoint(tmp_path / "stress.pth")
    spec = models.spec_from_config("stress", {**stress.MODEL_ENTRY, "checkpoint": str(path)})
    model, report = models.build(spec)
    assert report.source == "checkpoint"
    want = stress.stress_vit().state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, want[name]), name


# --------------------------------------------------------------------------- the dump


def write_images(root: Path, n: int) -> list[data.Entry]:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(70, 80, 3), dtype=np.uint8)).save(folder / f"img_{i}.png")
    return data.index_imagefolder(root)


def extract_stress(entries: list[data.Entry], path: Path) -> None:
    model = stress.stress_vit()
    spec = models.spec_from_config("stress", {**stress.MODEL_ENTRY, "weights": "random"})
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    options = extract.ExtractOptions(batch_size=8, cka_batch_size=4, exemplars=len(entries))
    meta = {"model": "stress", "dataset": "synthetic", **{k: v for k, v in spec.describe().items() if k != "alias"}}
    with dumps.create_file(path) as handle:  # as extract_dump writes it: checksummed and sealed
        extract.run(model, entries, transform, handle, options, CPU, meta)


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    root = tmp_path_factory.mktemp("stress")
    entries = write_images(root / "images", 12)
    path = root / "stress.h5"
    extract_stress(entries, path)
    return entries, path, *read_all(path)


def rule_loop(maps: np.ndarray, grid: tuple[int, int]) -> dict[str, np.ndarray]:
    """The zero-mass rule in float64 loops from the full maps (N, L, H, T, T)."""
    n, n_blocks, n_heads, _, _ = maps.shape
    gh, gw = grid
    g, unit = gh * gw, max(gh, gw) - 1
    distance = np.full((n, n_blocks, n_heads), np.nan)
    aligned = np.zeros((n_blocks, n_heads, 2 * gh - 1, 2 * gw - 1))
    zeros = np.zeros((n_blocks, n_heads), dtype=np.int64)
    sinks = np.zeros((n_blocks, n_heads, P + 1))
    for i in range(n):
        for b in range(n_blocks):
            for h in range(n_heads):
                a = maps[i, b, h].astype(np.float64)
                per_query = []
                for q in range(g):
                    row = a[P + q, P:]
                    mass = float(np.float32(maps[i, b, h, P + q, P:]).sum(dtype=np.float32))
                    if mass < np.finfo(np.float32).tiny:
                        zeros[b, h] += 1
                        continue
                    row = row / row.sum()
                    d = 0.0
                    for k in range(g):
                        d += row[k] * math.hypot((k % gw - q % gw) / unit, (k // gw - q // gw) / unit)
                        aligned[b, h, k // gw - q // gw + gh - 1, k % gw - q % gw + gw - 1] += row[k]
                    per_query.append(d)
                if per_query:
                    distance[i, b, h] = np.mean(per_query)
                received = a[P:, :].mean(axis=0)
                sinks[b, h, :P] += received[:P]
                sinks[b, h, P] += received[P:].max()
    return {"distance": distance, "aligned": aligned, "zeros": zeros, "sinks": sinks}


def test_dump_holds_no_nan(dump):
    _, _, arrays, _ = dump
    for name, value in arrays.items():
        if value.dtype.kind == "f":
            assert np.isfinite(value).all(), name
    assert arrays["attention/zero_mass_rows"].sum() > 0
    assert arrays["attention/zero_mass_rows"].dtype == np.int64


def test_reductions_follow_the_zero_mass_rule(dump):
    entries, _, arrays, attrs = dump
    want = rule_loop(arrays["exemplars/attention"], (4, 4))
    np.testing.assert_array_equal(arrays["attention/zero_mass_rows"], want["zeros"])
    np.testing.assert_allclose(arrays["attention/distance"], want["distance"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(arrays["attention/aligned_sum"], want["aligned"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(arrays["attention/sink_sum"], want["sinks"], rtol=1e-6, atol=1e-9)
    # the stress model's sinks, as the dump records them
    sinks = arrays["attention/sink_sum"] / attrs["attention"]["count"]
    assert sinks[0, 0, 0] >= 0.999999 and sinks[0, 1, 1] >= 0.999999
    # every derived average finite, each AAAM and spatial-query map sums to 1
    count, queries = int(attrs["attention"]["count"]), int(attrs["attention"]["queries"])
    zero = torch.from_numpy(arrays["attention/zero_mass_rows"])
    aaam = heads.aaam(torch.from_numpy(arrays["attention/aligned_sum"]), count, queries, zero)
    np.testing.assert_allclose(aaam.sum(dim=(-2, -1)).numpy(), 1.0, rtol=1e-6)
    cls, spatial = attention.averaged_maps(
        torch.from_numpy(arrays["attention/cls_sum"]), torch.from_numpy(arrays["attention/spatial_query_sum"]),
        count, queries, (4, 4), P, zero,
    )
    assert torch.isfinite(cls).all() and torch.isfinite(spatial).all()
    np.testing.assert_allclose(spatial.sum(dim=(-2, -1)).numpy(), 1.0, rtol=1e-6)
    rows = attention.distance_summary(torch.from_numpy(arrays["attention/distance"]), (4, 4), 16)
    assert all(math.isfinite(r["distance_grid"]) and r["images"] == len(entries) for r in rows)


FUSED_STRESS = r"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import torch
from test_stress import extract_stress, write_images
from vitscope.extract import fused
from vitscope.io import datasets as data
assert fused.available(torch.device("cpu"))
extract_stress(data.index_imagefolder(sys.argv[2]), Path(sys.argv[3]))
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_fused_kernel_agrees_on_the_stress_model(dump, tmp_path):
    entries, path, arrays, _ = dump
    env = {**os.environ, "TRITON_INTERPRET": "1", "VITSCOPE_FUSED": "1"}
    out = tmp_path / "fused.h5"
    root = str(Path(entries[0].path).parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", FUSED_STRESS, os.path.dirname(__file__), root, str(out)],
        env=env, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    got, _ = read_all(out)
    np.testing.assert_array_equal(got["attention/zero_mass_rows"], arrays["attention/zero_mass_rows"])
    for name in ("attention/distance", "attention/aligned_sum", "attention/spatial_query_sum", "attention/sink_sum"):
        assert np.isfinite(got[name]).all(), name
        np.testing.assert_allclose(got[name], arrays[name], rtol=1e-6, atol=1e-9, err_msg=name)


def hsic_u(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al.'s unbiased HSIC of linear kernels, written from its definition (float64)."""
    n = len(x)
    k, l = x @ x.T, y @ y.T  # noqa: E741
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    one = np.ones(n)
    return float(
        (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ k @ l @ one)
        / (n * (n - 3))
    )


def test_minibatch_cka_equals_float64_cka_from_tokens(dump):
    """The dump's (centred) Grams give the float64 CKA of the tokens to 1e-6; the same
    tokens' uncentred float32-era Grams do not (the massive channels)."""
    entries, _, arrays, _ = dump
    model = stress.stress_vit()
    spec = models.spec_from_config("stress", {**stress.MODEL_ENTRY, "weights": "random"})
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    x = torch.stack([transform(data.load_image(e.path)) for e in entries])
    blocks, _ = explicit_forward(model, x)
    tokens = np.stack([blocks[i].double().numpy() for i in range(6)], axis=1)  # (N, L, T, D)
    index = arrays["cka/index"]
    for rep in ("cls", "spatial", "all"):
        got = features.minibatch_cka(arrays[f"cka/blocks/{rep}"], arrays[f"cka/blocks/{rep}"])
        want = np.zeros((6, 6))
        uncentred = np.zeros((len(index), 6, 4, 4))
        for i in range(6):
            for j in range(6):
                hs = []
                for m, rows in enumerate(index):
                    fi, fj = (_rep(tokens[rows, layer], rep) for layer in (i, j))
                    fi, fj = fi - fi.mean(axis=0), fj - fj.mean(axis=0)
                    hs.append((hsic_u(fi, fj), hsic_u(fi, fi), hsic_u(fj, fj)))
                    if j == 0:
                        raw = _rep(tokens[rows, i], rep).astype(np.float32).astype(np.float64)
                        uncentred[m, i] = raw @ raw.T
                h = np.mean(hs, axis=0)
                want[i, j] = h[0] / math.sqrt(h[1] * h[2]) if h[1] * h[2] > 0 else np.nan
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=rep)
        # undefined only where the features are constant over the images: block 1's CLS
        # (its queries attend to the prefix tokens only, which no image changes)
        defined = np.ones((6, 6), dtype=bool)
        if rep == "cls":
            assert (tokens[:, 0, 0] == tokens[:1, 0, 0]).all()
            defined[0, :] = defined[:, 0] = False
        np.testing.assert_array_equal(np.isfinite(got), defined, err_msg=rep)
        old = features.minibatch_cka(uncentred, uncentred)
        assert not (np.abs(old - want) <= 1e-6).all(), rep  # what the uncentred Grams gave


def _rep(x: np.ndarray, rep: str) -> np.ndarray:
    """x (n, T, D) -> the CKA representation (docs/dumps.md)."""
    if rep == "cls":
        return x[:, 0]
    if rep == "spatial":
        return x[:, P:].reshape(len(x), -1)
    return x.reshape(len(x), -1)


def test_dump_opens(dump):
    _, path, _, _ = dump
    with dumps.open_dump(path) as handle:
        assert dumps.zero_mass_rows(handle).shape == (6, 2)
