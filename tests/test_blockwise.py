"""The blockwise attention path (vitscope.extract.blockwise) against the explicit reference.

The blockwise path computes timm's explicit attention a chunk of images at a time and hands
each chunk's probabilities to the recorders; the explicit path (``extract.attention:
explicit``) computes the whole batch and hands it over through ``attn_drop``. Here both run
on timm ``test_vit``, a q/k-normalised attention and the stress model (registers, attention
sinks, rows whose spatial mass underflows), with chunks of 1, 3 and 8 images (batches of 8
and a short last batch of 4): forwards, probabilities and every dataset of the dumps agree to
float32 rounding, and the dumps' reductions equal a float64 recomputation from the
probabilities (tests/test_extract.py does the same for the default path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from test_precision import OPTIONS, model_of, write_images
from timm.layers.attention import Attention

from vitscope.errors import ConfigError
from vitscope.extract import blockwise, precision
from vitscope.extract import run as extract
from vitscope.io import dumps
from vitscope.io import preprocess as loading
from vitscope.models import registry as models
from vitscope.testing import stress

CPU = torch.device("cpu")


def probabilities(model: torch.nn.Module, images: torch.Tensor, rows: int | None) -> tuple[torch.Tensor, list]:
    """Output tokens and, per block, the probabilities (B, H, T, T) as the listeners saw them
    (chunks concatenated), with ``rows`` images per chunk (None: the explicit path)."""
    seen: list[list[tuple[int, torch.Tensor]]] = [[] for _ in model.blocks]
    handles = [
        blockwise.tap(block.attn, lambda p, start, total, i=i: seen[i].append((start, p.clone())), rows)
        for i, block in enumerate(model.blocks)
    ]
    try:
        models.set_fused_attention(model, False)
        with torch.inference_mode():
            tokens = model.forward_features(images)
    finally:
        models.set_fused_attention(model, True)
        for handle in handles:
            handle.remove()
    maps = []
    for chunks in seen:
        starts = [s for s, _ in chunks]
        assert starts == sorted(starts) and starts[0] == 0
        maps.append(torch.cat([p for _, p in chunks]))
    return tokens, maps


def images_for(model: torch.nn.Module, n: int = 8, seed: int = 0) -> torch.Tensor:
    size = model.patch_embed.img_size
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["test_vit", "stress"])
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_blockwise_forward_equals_the_explicit_path(name, rows):
    _, model = model_of(name)
    images = images_for(model)
    want_tokens, want = probabilities(model, images, None)
    got_tokens, got = probabilities(model, images, rows)
    torch.testing.assert_close(got_tokens, want_tokens, rtol=1e-5, atol=1e-6)
    for block, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == w.shape == (8, model.blocks[0].attn.num_heads, *w.shape[-2:]), block
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7, msg=f"block {block + 1}")
    # and the probabilities are softmax(q k^T * scale), recomputed in float64
    with torch.inference_mode():
        x = model.patch_embed(images)
        x = model.norm_pre(model._pos_embed(x))
        block = model.blocks[0]
        h = block.norm1(x).double()
        attn = block.attn
        qkv = torch.nn.functional.linear(h, attn.qkv.weight.double(), attn.qkv.bias.double())
        q, k, _ = qkv.reshape(*h.shape[:2], 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        ref = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)
    torch.testing.assert_close(got[0].double(), ref, rtol=1e-4, atol=1e-6)


def test_a_q_k_normalised_gated_attention_runs_blockwise():
    torch.manual_seed(0)
    module = Attention(32, num_heads=4, qkv_bias=True, qk_norm=True, scale_norm=True, gated=True,
                       norm_layer=torch.nn.LayerNorm).eval()  # fmt: skip
    module.fused_attn = False
    x = torch.randn(5, 17, 32)
    with torch.inference_mode():
        want = module(x)
        seen = []
        handle = blockwise.tap(module, lambda p, s, t: seen.append((s, t, p.shape[0])), rows=2)
        got = module(x)
        handle.remove()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert seen == [(0, 5, 2), (2, 5, 2), (4, 5, 1)]


def test_blockwise_under_bf16_autocast_equals_the_explicit_path():
    _, model = model_of("stress")
    images = images_for(model, seed=1)
    with precision.numerics("bf16", CPU):
        want_tokens, want = probabilities(model, images, None)
        got_tokens, got = probabilities(model, images, 3)
    torch.testing.assert_close(got_tokens, want_tokens, rtol=1e-2, atol=1e-2)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype == torch.float32  # the float32 softmax on the CPU (vitscope.extract.precision)
        torch.testing.assert_close(g, w, rtol=1e-2, atol=1e-4)


def test_tap_and_remove_leave_the_module_as_it_was():
    _, model = model_of("test_vit")
    attn = model.blocks[0].attn
    first = blockwise.tap(attn, lambda *a: None, rows=2)
    assert "forward" in attn.__dict__ and blockwise.path(model) == "mixed"
    second = blockwise.tap(attn, lambda *a: None, rows=None)  # joins the blockwise path
    first.remove()
    assert "forward" in attn.__dict__  # one listener left
    second.remove()
    assert "forward" not in attn.__dict__ and not hasattr(attn, "_vitscope_taps")
    assert blockwise.path(model) == "explicit"
    handles = [blockwise.tap(b.attn, lambda *a: None, rows=4) for b in model.blocks]
    assert blockwise.path(model) == "blockwise (4 images per chunk)"
    for handle in handles:
        handle.remove()


def test_fused_and_training_modules_run_timms_own_forward():
    _, model = model_of("test_vit")
    calls = []
    handles = [blockwise.tap(b.attn, lambda *a: calls.append(1), rows=2) for b in model.blocks]
    images = images_for(model, n=3)
    try:
        with torch.inference_mode():
            models.set_fused_attention(model, True)
            model.forward_features(images)
            assert calls == []
            models.set_fused_attention(model, False)
            model.train()
            model.forward_features(images)
            assert calls == []  # training: timm's forward (dropout), no listener
            model.eval()
            model.forward_features(images)
            assert len(calls) == 2 * len(model.blocks)  # 3 images, chunks of 2
    finally:
        for handle in handles:
            handle.remove()
        models.set_fused_attention(model, True)


def test_an_attention_module_of_another_class_falls_back_to_the_explicit_path():
    class Subclass(Attention):
        pass

    module = Subclass(16, num_heads=2).eval()
    module.fused_attn = False
    assert not blockwise.supports(module) and blockwise.supports(Attention(16, num_heads=2))
    seen = []
    handle = blockwise.tap(module, lambda p, s, t: seen.append((s, t)), rows=1)
    assert "forward" not in module.__dict__
    with torch.inference_mode():
        module(torch.randn(3, 5, 16))
    handle.remove()
    assert seen == [(0, 3)]  # the whole batch, through attn_drop


def test_chunk_rows():
    # ViT-S/16 at 224 px: 6 x 197 x 197 float32 = 0.93 MB per image, 4 per 4 MiB chunk
    assert blockwise.chunk_rows(6, 197, 32, CPU) == 4
    assert blockwise.chunk_rows(12, 197, 64, CPU) == 2
    assert blockwise.chunk_rows(16, 1025, 8, CPU) == 1  # a chunk is never empty
    assert blockwise.chunk_rows(2, 17, 5, CPU) == 5  # never more than the batch
    assert blockwise.chunk_rows(6, 197, 64, torch.device("cuda")) == 64  # the whole batch


# --------------------------------------------------------------------------- whole dumps


def extract_with(path: Path, name: str, entries, attention: str, **options: Any) -> dict[str, Any]:
    spec, model = model_of(name)
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    meta = {"model": name, "dataset": "synthetic", **{k: v for k, v in spec.describe().items() if k != "alias"}}
    settings = extract.ExtractOptions(**{**OPTIONS, **options, "attention": attention})
    with dumps.create_file(path) as handle:
        extract.run(model, entries, transform, handle, settings, CPU, meta)
    arrays: dict[str, np.ndarray] = {}
    with dumps.open_dump(path) as handle:
        handle.visititems(lambda k, v: arrays.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None)
        attrs = dict(handle.attrs)
    return {"arrays": arrays, "attrs": attrs}


@pytest.mark.parametrize("name", ["test_vit", "stress"])
def test_blockwise_dumps_equal_explicit_dumps(name, tmp_path, monkeypatch):
    """Chunks of 3 images (batches of 8 and 4: chunks 3 + 3 + 2, then 3 + 1): every dataset
    of the dump equals the explicit path's to float32 rounding, the counts exactly."""
    entries = write_images(tmp_path / "images")
    explicit = extract_with(tmp_path / "explicit.h5", name, entries, "explicit")
    _, model = model_of(name)
    per_image = model.blocks[0].attn.num_heads * models.geometry(model).tokens ** 2 * 4
    monkeypatch.setattr(blockwise, "CHUNK_BYTES", 3 * per_image)
    fast = extract_with(tmp_path / "blockwise.h5", name, entries, "blockwise")
    assert explicit["attrs"]["attention_path"] == "explicit"
    assert fast["attrs"]["attention_path"] == "blockwise (3 images per chunk)"
    a, b = fast["arrays"], explicit["arrays"]
    assert set(a) == set(b)
    for key in sorted(a):
        if a[key].dtype.kind in "iubOS":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            np.testing.assert_allclose(a[key], b[key], rtol=2e-5, atol=1e-6, err_msg=key)
    if name == "stress":  # the rows whose spatial mass underflows are found on both paths
        assert a["attention/zero_mass_rows"].sum() > 0


def test_an_unknown_attention_path_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="extract.attention = 'flash'"):
        extract.ExtractOptions(attention="flash")


def test_the_stress_model_runs_blockwise():
    model = stress.stress_vit()
    assert all(blockwise.supports(block.attn) for block in model.blocks)
