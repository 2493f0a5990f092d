"""Original checkpoint formats: each release layout loads exactly into timm's model.

For every format a *reference module* is written here from the published
architecture with the release's key layout (not with vitscope's loader), given
random weights at a tiny size, saved in the release's file format, loaded
through ``models.spec_from_config`` + ``models.build``, and its block outputs
and final tokens compared with vitscope's model on the same input.
"""

from __future__ import annotations

import argparse
import builtins
import copy
import math
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitscope.errors import CheckpointError, CheckpointNotFound, ConfigError
from vitscope.models import registry as models
from vitscope.models.formats import mocov3

D, DEPTH, HEADS, PATCH, IMAGE = 64, 3, 4, 8, 32
GRID = IMAGE // PATCH
TOKENS = 1 + GRID * GRID
TINY = {"embed_dim": D, "depth": DEPTH, "num_heads": HEADS, "patch_size": PATCH}
ATOL = RTOL = 1e-5

# Writing the CLIP reference archive needs torch.jit, deprecated but how the releases were made.
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning:torch.jit"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]


# --------------------------------------------------------------------------- helpers


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere (LayerNorm scales around 1), so every tensor matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.1
            p.copy_(1 + noise if _is_norm_scale(module, name) else noise)
    return module.eval()


def _is_norm_scale(module: nn.Module, name: str) -> bool:
    owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
    return isinstance(owner, nn.LayerNorm) and name.endswith("weight")


def load(family: str, path: Path, fmt: str | None = None, **extra) -> tuple[nn.Module, models.LoadReport]:
    """vitscope's tiny model of ``family`` loaded from ``path``."""
    entry = {
        "family": family,
        "size": "B/16",
        "weights": "checkpoint",
        "checkpoint": str(path),
        "image_size": extra.pop("image_size", IMAGE),
        "model_kwargs": {**TINY, **extra},
    }
    if fmt:
        entry["format"] = fmt
    return models.build(models.spec_from_config(family, entry))


def run(model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Block outputs (residual stream) and ``forward_features`` of a timm model."""
    outs: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in model.blocks]
    with torch.no_grad():
        final = model.forward_features(x)
    for h in hooks:
        h.remove()
    return outs, final


def assert_same_outputs(model: nn.Module, reference: Callable, seed: int = 0) -> None:
    x = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))
    blocks, final = run(model, x)
    with torch.no_grad():
        ref_blocks, ref_final = reference(x)
    assert len(blocks) == len(ref_blocks) == DEPTH
    for i, (a, b) in enumerate(zip(blocks, ref_blocks, strict=True)):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL, msg=lambda m, i=i: f"block {i + 1}: {m}")
    torch.testing.assert_close(final, ref_final, atol=ATOL, rtol=RTOL)


# --------------------------------------------------------------------------- reference: timm-layout ViT
# DINO's vision_transformer.py, MoCo-v3's VisionTransformerMoCo and MAE's encoder
# all use this layout: patch_embed.proj, cls_token, pos_embed, blocks.{i}.{norm1,
# attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm; LayerNorm eps 1e-6, GELU.


class RefAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class RefMlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), RefAttention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), RefMlp(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RefPatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class RefViT(nn.Module):
    """DINO / MoCo-v3 / MAE encoder; ``forward`` returns (block outputs, norm(tokens))."""

    def __init__(self, dim: int = D, depth: int = DEPTH, heads: int = HEADS) -> None:
        super().__init__()
        self.patch_embed = RefPatchEmbed(dim, PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, TOKENS, dim))
        self.blocks = nn.ModuleList(RefBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs, self.norm(x)


def moco_sincos(g: int, dim: int) -> torch.Tensor:
    """MoCo-v3's build_2d_sincos_position_embedding, written from its description."""
    grid_w, grid_h = torch.meshgrid(
        torch.arange(g, dtype=torch.float32), torch.arange(g, dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / (10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4)))
    out_w = torch.einsum("m,d->md", grid_w.flatten(), omega)
    out_h = torch.einsum("m,d->md", grid_h.flatten(), omega)
    pos = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)[None]
    return torch.cat([torch.zeros(1, 1, dim), pos], dim=1)


# --------------------------------------------------------------------------- reference: OpenAI CLIP


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=QuickGELU(), c_proj=nn.Linear(4 * width, width))
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (T, B, D), sequence first
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])


class ClipVisual(nn.Module):
    """OpenAI CLIP's image VisionTransformer (model.py)."""

    def __init__(self, width: int = D, layers: int = DEPTH, heads: int = HEADS, output_dim: int = 32) -> None:
        super().__init__()
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, PATCH, PATCH, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(TOKENS, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def tokens(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.conv1(x).flatten(2).permute(0, 2, 1)
        cls = self.class_embedding + torch.zeros(len(x), 1, x.shape[-1])
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding).permute(1, 0, 2)
        outs = []
        for block in self.transformer.resblocks:
            x = block(x)
            outs.append(x.permute(1, 0, 2))
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_post(self.tokens(x)[-1][:, 0, :]) @ self.proj

    def reference(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        outs = self.tokens(x)
        return outs, self.ln_post(outs[-1])


class Clip(nn.Module):
    """The parts of OpenAI's CLIP around ``visual`` (text tower reduced to a few tensors)."""

    def __init__(self) -> None:
        super().__init__()
        self.visual = ClipVisual()
        self.token_embedding = nn.Embedding(50, 32)
        self.positional_embedding = nn.Parameter(torch.randn(8, 32))
        self.ln_final = nn.LayerNorm(32)
        self.text_projection = nn.Parameter(torch.randn(32, 32))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image)


# --------------------------------------------------------------------------- reference: BEiT pretraining


def beit_relative_index(g: int) -> torch.Tensor:
    """BEiT's relative position index over CLS + g*g tokens, (T, T)."""
    coords = torch.stack(torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel[:, :, 0] += g - 1
    rel[:, :, 1] += g - 1
    rel[:, :, 0] *= 2 * g - 1
    n = (2 * g - 1) ** 2 + 3
    index = torch.zeros(g * g + 1, g * g + 1, dtype=torch.long)
    index[1:, 1:] = rel.sum(-1)
    index[0, 0:], index[0:, 0], index[0, 0] = n - 3, n - 2, n - 1
    return index


class BeitRelPosBias(nn.Module):
    def __init__(self, g: int, heads: int) -> None:
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * g - 1) ** 2 + 3, heads))
        self.register_buffer("relative_position_index", beit_relative_index(g))

    def forward(self) -> torch.Tensor:
        t = self.relative_position_index.numel() ** 0.5
        n = int(round(t))
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1)


class BeitAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rel_bias: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        q, k, v = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn = ((q * self.scale) @ k.transpose(-2, -1) + rel_bias).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class BeitBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), BeitAttention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), RefMlp(dim)
        self.gamma_1 = nn.Parameter(0.1 * torch.ones(dim))
        self.gamma_2 = nn.Parameter(0.1 * torch.ones(dim))

    def forward(self, x: torch.Tensor, rel_bias: torch.Tensor) -> torch.Tensor:
        x = x + self.gamma_1 * self.attn(self.norm1(x), rel_bias)
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class BeitPretrain(nn.Module):
    """BEiT's VisionTransformerForMaskedImageModeling with a shared relative position bias."""

    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, D))
        self.patch_embed = RefPatchEmbed(D, PATCH)
        self.rel_pos_bias = BeitRelPosBias(GRID, HEADS)
        self.blocks = nn.ModuleList(BeitBlock(D, HEADS) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.lm_head = nn.Linear(D, 40)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        bias, outs = self.rel_pos_bias(), []
        for block in self.blocks:
            x = block(x, bias)
            outs.append(x)
        return outs, self.norm(x)


# --------------------------------------------------------------------------- reference: AugReg (Flax)


def augreg_arrays(seed: int) -> dict[str, np.ndarray]:
    """Random arrays named and shaped as in an AugReg .npz (vision_transformer repo)."""
    rng = np.random.default_rng(seed)

    def rand(*shape: int, center: float = 0.0) -> np.ndarray:
        return (center + 0.1 * rng.standard_normal(shape)).astype(np.float32)

    dh = D // HEADS
    a = {
        "embedding/kernel": rand(PATCH, PATCH, 3, D),
        "embedding/bias": rand(D),
        "cls": rand(1, 1, D),
        "Transformer/posembed_input/pos_embedding": rand(1, TOKENS, D),
        "Transformer/encoder_norm/scale": rand(D, center=1),
        "Transformer/encoder_norm/bias": rand(D),
        "head/kernel": rand(D, 10),
        "head/bias": rand(10),
    }
    for i in range(DEPTH):
        b = f"Transformer/encoderblock_{i}"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            a[f"{b}/{ln}/scale"], a[f"{b}/{ln}/bias"] = rand(D, center=1), rand(D)
        for n in ("query", "key", "value"):
            a[f"{b}/MultiHeadDotProductAttention_1/{n}/kernel"] = rand(D, HEADS, dh)
            a[f"{b}/MultiHeadDotProductAttention_1/{n}/bias"] = rand(HEADS, dh)
        a[f"{b}/MultiHeadDotProductAttention_1/out/kernel"] = rand(HEADS, dh, D)
        a[f"{b}/MultiHeadDotProductAttention_1/out/bias"] = rand(D)
        a[f"{b}/MlpBlock_3/Dense_0/kernel"], a[f"{b}/MlpBlock_3/Dense_0/bias"] = rand(D, 4 * D), rand(4 * D)
        a[f"{b}/MlpBlock_3/Dense_1/kernel"], a[f"{b}/MlpBlock_3/Dense_1/bias"] = rand(4 * D, D), rand(D)
    return a


def flax_vit(a: dict[str, np.ndarray], x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The Flax ViT forward, written on the arrays in their own layout (NHWC, einsums).

    GELU is exact (as timm, and therefore the study, runs it; Flax's default is tanh).
    """
    p = {k: torch.from_numpy(v) for k, v in a.items()}

    def ln(y: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(y, y.shape[-1:], p[f"{name}/scale"], p[f"{name}/bias"], eps=1e-6)

    n = len(x)
    img = x.permute(0, 2, 3, 1).reshape(n, GRID, PATCH, GRID, PATCH, 3)
    y = torch.einsum("bipjqc,pqcd->bijd", img, p["embedding/kernel"]) + p["embedding/bias"]
    y = torch.cat([p["cls"].expand(n, -1, -1), y.reshape(n, GRID * GRID, D)], dim=1)
    y = y + p["Transformer/posembed_input/pos_embedding"]
    outs = []
    for i in range(DEPTH):
        b = f"Transformer/encoderblock_{i}"
        att = f"{b}/MultiHeadDotProductAttention_1"
        h = ln(y, f"{b}/LayerNorm_0")
        q, k, v = (
            torch.einsum("btd,dhk->bthk", h, p[f"{att}/{m}/kernel"]) + p[f"{att}/{m}/bias"]
            for m in ("query", "key", "value")
        )
        w = (torch.einsum("bqhk,bshk->bhqs", q, k) / math.sqrt(D // HEADS)).softmax(-1)
        o = torch.einsum("bhqs,bshk->bqhk", w, v)
        y = y + torch.einsum("bqhk,hkd->bqd", o, p[f"{att}/out/kernel"]) + p[f"{att}/out/bias"]
        h = ln(y, f"{b}/LayerNorm_2")
        h = F.gelu(h @ p[f"{b}/MlpBlock_3/Dense_0/kernel"] + p[f"{b}/MlpBlock_3/Dense_0/bias"])
        y = y + h @ p[f"{b}/MlpBlock_3/Dense_1/kernel"] + p[f"{b}/MlpBlock_3/Dense_1/bias"]
        outs.append(y)
    return outs, ln(y, "Transformer/encoder_norm")


# --------------------------------------------------------------------------- checkpoint writers


def write_dino(directory: Path) -> tuple[Path, nn.Module]:
    ref = randomize(RefViT(), 1)
    path = directory / "dino_vittiny8_pretrain.pth"
    torch.save(ref.state_dict(), path)
    return path, ref


def write_mocov3(directory: Path) -> tuple[Path, nn.Module]:
    ref = randomize(RefViT(), 2)
    with torch.no_grad():
        ref.pos_embed.copy_(moco_sincos(GRID, D))
    head = nn.Sequential(nn.Linear(D, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16))
    base = nn.Module()
    for name, child in ref.named_children():
        base.add_module(name, child)
    base.cls_token, base.pos_embed, base.head = ref.cls_token, ref.pos_embed, head
    moco = nn.Module()
    moco.base_encoder, moco.momentum_encoder = base, copy.deepcopy(base)
    moco.predictor = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16))
    wrapper = nn.Module()
    wrapper.module = moco
    path = directory / "vit-t-300ep.pth.tar"
    optimizer = {"state": {}, "param_groups": [{"lr": 1.5e-4, "params": [0, 1]}]}
    torch.save({"epoch": 300, "arch": "vit_tiny", "state_dict": wrapper.state_dict(), "optimizer": optimizer}, path)
    return path, ref


def write_mae(directory: Path) -> tuple[Path, nn.Module]:
    ref = randomize(RefViT(), 3)
    mae = nn.Module()
    for name, child in ref.named_children():
        mae.add_module(name, child)
    mae.cls_token, mae.pos_embed = ref.cls_token, ref.pos_embed
    mae.mask_token = nn.Parameter(torch.zeros(1, 1, 32))
    mae.decoder_embed = nn.Linear(D, 32)
    mae.decoder_pos_embed = nn.Parameter(torch.zeros(1, TOKENS, 32))
    mae.decoder_blocks = nn.ModuleList(RefBlock(32, 2) for _ in range(2))
    mae.decoder_norm = nn.LayerNorm(32)
    mae.decoder_pred = nn.Linear(32, PATCH * PATCH * 3)
    path = directory / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": mae.state_dict(), "args": argparse.Namespace(mask_ratio=0.75)}, path)
    return path, ref


def write_beit(directory: Path) -> tuple[Path, nn.Module]:
    ref = randomize(BeitPretrain(), 4)
    path = directory / "beit_tiny_patch8_32_pt22k.pth"
    torch.save({"model": ref.state_dict()}, path)
    return path, ref


def write_clip(directory: Path, half: bool = True, jit: bool = True) -> tuple[Path, nn.Module]:
    clip = randomize(Clip(), 5)
    path = directory / f"ViT-T-8{'-fp16' if half else ''}{'' if jit else '-state'}.pt"
    if jit:
        traced = torch.jit.trace(clip, torch.randn(1, 3, IMAGE, IMAGE), check_trace=False)
        (traced.half() if half else traced).save(str(path))
    else:
        torch.save(clip.state_dict(), path)
    ref = copy.deepcopy(clip.visual).half().float() if half else clip.visual
    return path, ref


def write_augreg(directory: Path) -> tuple[Path, dict[str, np.ndarray]]:
    arrays = augreg_arrays(6)
    path = directory / "Ti_8-i21k-300ep--imagenet2012-res_32.npz"
    np.savez(path, **arrays)
    return path, arrays


WRITERS = {"dino": write_dino, "mocov3": write_mocov3, "mae": write_mae, "beit": write_beit, "clip": write_clip}
FAMILY_FORMAT = {
    "fs": "augreg_npz",
    "clip": "openai_clip",
    "dino": "dino",
    "mocov3": "mocov3",
    "mae": "mae",
    "beit": "beit",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    """One checkpoint per family, written once for this module."""
    directory = tmp_path_factory.mktemp("releases")
    out: dict[str, tuple[Path, object]] = {name: write(directory) for name, write in WRITERS.items()}
    out["fs"] = write_augreg(directory)
    return out


# --------------------------------------------------------------------------- exact loading


@pytest.mark.parametrize("family", ["dino", "mocov3", "mae", "beit", "clip"])
def test_release_loads_exactly(files, family: str) -> None:
    path, ref = files[family]
    model, report = load(family, path)
    reference = ref.reference if family == "clip" else ref
    assert_same_outputs(model, reference)
    assert report.source == "checkpoint" and report.file == str(path)
    assert report.sha256 == models.sha256_file(path) and len(report.sha256) == 64
    assert report.loaded == len(model.state_dict()) and not report.missing and not report.unexpected


def test_augreg_npz_loads_exactly_and_agrees_with_timm(files) -> None:
    from timm.models.vision_transformer import _load_weights

    path, arrays = files["fs"]
    model, report = load("fs", path)
    assert_same_outputs(model, lambda x: flax_vit(arrays, x))
    assert report.dropped == ["head/bias", "head/kernel"] and report.loaded == len(model.state_dict())
    twin = models.create(
        models.spec_from_config("t", {"arch": "vit_base_patch16_224", "image_size": IMAGE, "model_kwargs": TINY})
    )
    _load_weights(twin, str(path))  # timm's own .npz loader: a second code path
    for key, value in twin.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, atol=0, rtol=0, msg=key)


@pytest.mark.parametrize(("half", "jit"), [(False, True), (False, False)])
def test_clip_fp32_archive_and_plain_state_dict(tmp_path: Path, half: bool, jit: bool) -> None:
    path, ref = write_clip(tmp_path, half=half, jit=jit)
    model, _ = load("clip", path)
    assert_same_outputs(model, ref.reference)


def test_reports_name_what_was_dropped(files) -> None:
    _, report = load("mocov3", files["mocov3"][0])
    assert "module.base_encoder.head.0.weight" in report.dropped
    assert any(k.startswith("module.momentum_encoder.") for k in report.dropped)
    assert any(k.startswith("module.predictor.") for k in report.dropped)
    _, report = load("mae", files["mae"][0])
    assert "mask_token" in report.dropped and "decoder_pred.weight" in report.dropped
    _, report = load("beit", files["beit"][0])
    assert {"lm_head.weight", "mask_token", "rel_pos_bias.relative_position_index"} <= set(report.dropped)
    _, report = load("clip", files["clip"][0])
    assert "visual.proj" in report.dropped and "logit_scale" in report.dropped


def test_beit_shared_bias_is_in_every_block(files) -> None:
    path, ref = files["beit"]
    model, _ = load("beit", path)
    shared = ref.rel_pos_bias.relative_position_bias_table
    assert model.rel_pos_bias is None and model.pos_embed is None
    for block in model.blocks:
        assert torch.equal(block.attn.relative_position_bias_table, shared)


def test_mocov3_position_embedding_is_sincos_and_regridded_exactly(files) -> None:
    path, ref = files["mocov3"]
    model, _ = load("mocov3", path)
    torch.testing.assert_close(model.pos_embed, moco_sincos(GRID, D), atol=0, rtol=0)
    assert torch.equal(mocov3.sincos_pos_embed((GRID, GRID), D), moco_sincos(GRID, D))
    larger, _ = load("mocov3", path, image_size=2 * IMAGE)
    torch.testing.assert_close(larger.pos_embed, moco_sincos(2 * GRID, D), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- errors


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "weights" / "dino_vitbase16_pretrain.pth"
    with pytest.raises(
        CheckpointNotFound, match=r"models\.dino\.checkpoint = '.*dino_vitbase16_pretrain\.pth' does not exist"
    ):
        load("dino", path)


@pytest.mark.parametrize("family", sorted(FAMILY_FORMAT))
def test_truncated_file_names_file_and_format(files, tmp_path: Path, family: str) -> None:
    path = files[family][0]
    cut = tmp_path / path.name
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"{cut.name}.*{FAMILY_FORMAT[family]}"):
        load(family, cut)


@pytest.mark.parametrize(
    ("source", "family"),
    [
        ("mae", "dino"),
        ("clip", "mocov3"),
        ("dino", "mae"),
        ("mocov3", "beit"),
        ("beit", "clip"),
        ("fs", "dino"),
        ("dino", "fs"),
        ("clip", "dino"),
        ("mocov3", "dino"),
        ("beit", "mae"),
        ("mae", "mocov3"),
        ("dino", "clip"),
    ],
)
def test_file_of_another_family_is_refused(files, source: str, family: str) -> None:
    path = files[source][0]
    with pytest.raises(CheckpointError, match=rf"{path.name}.*{FAMILY_FORMAT[family]}"):
        load(family, path)


def test_a_missing_tensor_is_named(files, tmp_path: Path) -> None:
    path, ref = files["dino"]
    state = torch.load(path, weights_only=True)
    del state["blocks.1.mlp.fc2.bias"]
    broken = tmp_path / "dino_broken.pth"
    torch.save(state, broken)
    with pytest.raises(CheckpointError, match=r"missing 1 keys \(blocks\.1\.mlp\.fc2\.bias\)"):
        load("dino", broken)


def _poison(state: dict[str, object], marker: str, value: float) -> str:
    """Write ``value`` into element 3 of the first float entry whose name holds ``marker``; return its name."""
    name = next(k for k, v in state.items() if marker in k and getattr(v, "dtype", None) is not None)
    tensor = state[name]
    if isinstance(tensor, np.ndarray):
        tensor.reshape(-1)[3] = value
    else:
        with torch.no_grad():
            tensor.view(-1)[3] = value  # type: ignore[union-attr]
    return name


@pytest.mark.parametrize(
    ("family", "value"),
    [("dino", math.nan), ("dino", math.inf), ("mocov3", math.nan), ("mae", -math.inf), ("beit", math.nan),
     ("clip", math.nan), ("clip", math.inf), ("fs", math.nan)],
)
def test_non_finite_weights_are_refused_naming_file_and_tensor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, family: str, value: float
) -> None:
    """A release file with one NaN or Inf in block 1 fails to load, in every format, naming
    the file and the tensor (timm's key), instead of writing NaN into every dump."""
    if family == "fs":
        arrays = augreg_arrays(6)
        _poison(arrays, "encoderblock_1/", value)
        path = tmp_path / "Ti_8-poisoned.npz"
        np.savez(path, **arrays)
    else:
        plain = randomize

        def poisoned(module: nn.Module, seed: int) -> nn.Module:
            module = plain(module, seed)
            _poison(dict(module.named_parameters()), "blocks.1.", value)
            return module

        monkeypatch.setitem(globals(), "randomize", poisoned)
        path, _ = WRITERS[family](tmp_path)
    kind = "1 NaN, 0 Inf" if math.isnan(value) else "0 NaN, 1 Inf"
    with pytest.raises(CheckpointError, match=rf"{path.name}'.*tensor blocks\.1\.\S+ .*non-finite weights \({kind}"):
        load(family, path)


def test_timm_hub_and_random_weights_are_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """weights: timm goes through the same check (the hub is mocked: a model whose pos_embed holds NaN)."""
    real = models.create

    def hub(spec: models.ModelSpec, pretrained: bool = False) -> nn.Module:
        model = real(spec)
        if pretrained:
            with torch.no_grad():
                model.pos_embed[0, 1, 2] = math.nan
        return model

    monkeypatch.setattr(models, "create", hub)
    entry = {"arch": "vit_tiny_patch16_224", "image_size": 32, "model_kwargs": TINY}
    model, report = models.build(models.spec_from_config("r", entry))  # random init: finite, loads
    assert report.source == "random"
    spec = models.spec_from_config("h", {**entry, "weights": "timm", "tag": "augreg_in21k"})
    with pytest.raises(CheckpointError, match=r"timm:vit_tiny_patch16_224\.augreg_in21k'.*tensor pos_embed .*1 NaN"):
        models.build(spec)


def test_a_deeper_file_is_refused(files) -> None:
    with pytest.raises(CheckpointError, match="unexpected .*blocks.2"):
        load("dino", files["dino"][0], depth=2)


def test_fine_tuned_releases_are_refused(files, tmp_path: Path) -> None:
    path, _ = files["beit"]
    raw = torch.load(path, weights_only=True)
    raw["model"]["head.weight"] = torch.zeros(10, D)
    torch.save(raw, tmp_path / "beit_ft.pth")
    with pytest.raises(CheckpointError, match="fine-tuned BEiT"):
        load("beit", tmp_path / "beit_ft.pth")


# --------------------------------------------------------------------------- safe reading
# No checkpoint file runs code: TorchScript archives are read without torch.jit.load,
# pickles with weights_only, .npz without pickles. Each payload below is first shown to
# run through the unsafe reader, so the tests could fail.


class Leaf(nn.Module):
    """Parameters, a None parameter, int and non-persistent buffers, a plain tensor attribute."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 6, dtype=dtype)
        self.conv = nn.Conv2d(3, 2, 1, bias=False, dtype=dtype)
        self.register_buffer("steps", torch.arange(5))
        self.register_buffer("scratch", torch.ones(2, dtype=dtype), persistent=False)  # kept by TorchScript
        self.plain = torch.zeros(3, dtype=dtype)  # neither parameter nor buffer: not in the state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + self.steps.sum() + self.scratch.sum() + self.plain.sum()


class Tree(nn.Module):
    """Nested submodules; views with storage offsets and strides; a parameter shared by two modules."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        base = torch.randn(6, 6, generator=torch.Generator().manual_seed(0)).to(dtype)
        self.w = nn.Parameter(base)
        self.register_buffer("rows", base[1:, ::2])
        self.register_buffer("cols", base.t())
        self.leaf = Leaf(dtype)
        self.stack = nn.Sequential(Leaf(dtype), nn.LayerNorm(6, dtype=dtype))
        self.leaf.lin.weight = self.w
        randomize(self, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack(self.leaf(x)) + self.rows.sum() + self.cols.sum()


def assert_identical(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    """Same keys in the same order; per tensor the same dtype, size, stride, offset and bits;
    the same tensors share a storage."""
    assert list(ours) == list(theirs)
    for key, a in ours.items():
        b = theirs[key]
        assert (a.dtype, a.shape, a.stride(), a.storage_offset()) == (b.dtype, b.shape, b.stride(), b.storage_offset())
        assert torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))

    def sharing(state: dict[str, torch.Tensor]) -> list[list[str]]:
        groups: dict[int, list[str]] = {}
        for key, t in state.items():
            groups.setdefault(t.untyped_storage().data_ptr(), []).append(key)
        return sorted(groups.values())

    assert sharing(ours) == sharing(theirs)


def jit_reference(path: Path) -> dict[str, torch.Tensor]:
    """torch.jit.load's state dict (runs the archive's code: only on archives written here)."""
    return torch.jit.load(str(path), map_location="cpu").state_dict()


def rewrite_zip(src: Path, dst: Path, edit: Callable[[str, bytes], tuple[str, bytes]]) -> Path:
    """A copy of the zip ``src`` with each record ``(name, data)`` replaced by ``edit(name, data)``."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for info in old.infolist():
            new.writestr(*edit(info.filename, old.read(info)))
    return dst


def torchscript_state(path: Path) -> dict[str, torch.Tensor]:
    from vitscope.models.formats import torchscript

    return torchscript.state_dict(path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_reader_equals_jit_load(tmp_path: Path, how: str, dtype: torch.dtype) -> None:
    tree = Tree(dtype)
    x = torch.randn(2, 6).to(dtype)
    module = torch.jit.script(tree) if how == "script" else torch.jit.trace(tree, x)
    module.save(str(tmp_path / "tree.pt"))
    ours, theirs = torchscript_state(tmp_path / "tree.pt"), jit_reference(tmp_path / "tree.pt")
    assert_identical(ours, theirs)
    assert "leaf.scratch" in ours and "leaf.plain" not in ours and "leaf.conv.bias" not in ours
    assert ours["rows"].storage_offset() == 6 and not ours["rows"].is_contiguous()


@pytest.mark.parametrize("half", [True, False])
def test_torchscript_reader_equals_jit_load_on_the_clip_archive(files, tmp_path: Path, half: bool) -> None:
    path = files["clip"][0] if half else write_clip(tmp_path, half=False)[0]
    ours = torchscript_state(path)
    assert_identical(ours, jit_reference(path))
    assert ours["visual.conv1.weight"].dtype == (torch.float16 if half else torch.float32)


@pytest.mark.parametrize("top", ["ViT-B-16", "archive"])
def test_torchscript_reader_takes_any_top_folder(files, tmp_path: Path, top: str) -> None:
    path = files["clip"][0]
    renamed = rewrite_zip(path, tmp_path / "renamed.pt", lambda name, blob: (f"{top}/{name.split('/', 1)[1]}", blob))
    assert all(name.startswith(f"{top}/") for name in zipfile.ZipFile(renamed).namelist())
    assert_identical(torchscript_state(renamed), jit_reference(path))


def test_torchscript_reader_swaps_a_big_endian_archive(tmp_path: Path) -> None:
    path = write_clip(tmp_path, half=False)[0]  # float32 storages only

    def big_endian(name: str, blob: bytes) -> tuple[str, bytes]:
        if name.endswith("/byteorder"):
            return name, b"big"
        if "/data/" in name:
            return name, np.frombuffer(blob, dtype="<f4").astype(">f4").tobytes()
        return name, blob

    swapped = rewrite_zip(path, tmp_path / "big.pt", big_endian)
    assert zipfile.ZipFile(swapped).read(f"{path.stem}/data/0") != zipfile.ZipFile(path).read(f"{path.stem}/data/0")
    reference = jit_reference(path)
    ours = torchscript_state(swapped)
    assert list(ours) == list(reference) and all(torch.equal(ours[k], reference[k]) for k in reference)


def test_swap_bytes_reverses_each_element() -> None:
    from vitscope.models.formats.torchscript import swap_bytes

    for dtype, np_dtype in [(torch.float16, "f2"), (torch.int64, "i8"), (torch.complex64, "c8"), (torch.uint8, "u1")]:
        values = np.arange(1, 7).astype(np_dtype)
        big = torch.frombuffer(bytearray(values.astype(">" + np_dtype).tobytes()), dtype=torch.uint8)
        assert torch.equal(swap_bytes(big, dtype).view(dtype), torch.from_numpy(values.astype("<" + np_dtype)))


def test_default_path_never_calls_torch_jit_load(files, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load called")

    monkeypatch.setattr(torch.jit, "load", refuse)
    path, ref = files["clip"]
    model, _ = load("clip", path)
    assert_same_outputs(model, ref.reference)


def clip_entry(path: Path, **extra) -> dict:
    return {"family": "clip", "size": "B/16", "checkpoint": str(path), "image_size": IMAGE, "model_kwargs": TINY,
            **extra}


def test_trusted_path_is_opt_in_and_reads_the_same(files, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    jit_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: calls.append(a) or jit_load(*a, **k))
    path, ref = files["clip"]
    model, _ = models.build(models.spec_from_config("clip", clip_entry(path, trust_torchscript_code=True)))
    assert len(calls) == 1
    assert_same_outputs(model, ref.reference)
    models.build(models.spec_from_config("clip", clip_entry(path, trust_torchscript_code=False)))
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"trust_torchscript_code": "yes"}, r"models\.clip\.trust_torchscript_code = 'yes' must be true or false"),
        ({"trust_torchscript_code": True, "format": "dino"}, r"applies only to TorchScript.*openai_clip"),
    ],
)
def test_trust_key_is_checked(files, entry: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        models.spec_from_config("clip", clip_entry(files["clip"][0], **entry))
    with pytest.raises(ConfigError, match="applies only to TorchScript"):
        models.spec_from_config("r", {"arch": "vit_base_patch16_224", "trust_torchscript_code": True})


class Payload:
    """Unpickling calls ``function(*args)``; each payload below writes a marker file."""

    def __init__(self, function: object, *args: object) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple:
        return self.function, self.args


def payload(marker: Path, kind: str = "exec") -> Payload:
    if kind == "os.system":
        return Payload(os.system, f"touch '{marker}'")
    return Payload(builtins.exec, f"open({str(marker)!r}, 'w').write('ran')")


@pytest.mark.parametrize("kind", ["exec", "os.system"])
def test_torchscript_data_pkl_payload_never_runs(files, tmp_path: Path, kind: str) -> None:
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(payload(live, kind), protocol=2))
    assert live.exists()
    marker = tmp_path / "marker"
    blob = pickle.dumps({"visual": payload(marker, kind)}, protocol=2)
    crafted = rewrite_zip(files["clip"][0], tmp_path / "ViT-crafted.pt",
                          lambda name, data: (name, blob if name.endswith("/data.pkl") else data))
    refused = r"'openai_clip': refused to load global (__builtin__\.exec|posix\.system|os\.system)"
    with pytest.raises(CheckpointError, match=r"ViT-crafted\.pt' cannot be read as format " + refused) as e:
        load("clip", crafted)
    assert "trust_torchscript_code" not in str(e.value)  # a crafted file gets no hint to trust it
    assert not marker.exists()


def test_torchscript_setstate_code_never_runs(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    class Stateful(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.w

        @torch.jit.export
        def __getstate__(self) -> tuple[torch.Tensor, bool]:
            return (self.w, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
            print("archive code ran")
            self.w = state[0]
            self.training = state[1]

    path = tmp_path / "ViT-stateful.pt"
    torch.jit.script(Stateful()).save(str(path))
    capfd.readouterr()
    jit_reference(path)
    assert "archive code ran" in capfd.readouterr().out  # torch.jit.load runs the archive's code
    with pytest.raises(CheckpointError, match=r"ViT-stateful\.pt' cannot be read as format 'openai_clip': .*"
                                              r"__getstate__.*trust_torchscript_code"):
        load("clip", path)
    assert "archive code ran" not in capfd.readouterr().out


def test_torchscript_code_payload_never_runs(files, tmp_path: Path) -> None:
    live, marker = tmp_path / "live", tmp_path / "marker"
    line = "__import__('pathlib').Path({!r}).write_text('ran')\n"
    exec(line.format(str(live)))
    assert live.exists()
    path, ref = files["clip"]
    crafted = rewrite_zip(
        path, tmp_path / "ViT-code.pt",
        lambda name, data: (name, data + line.format(str(marker)).encode() if "/code/" in name and name.endswith(".py")
                            else data),
    )
    root_code = zipfile.ZipFile(crafted).read(f"{path.stem}/code/__torch__/test_formats.py")
    assert line.format(str(marker)).encode() in root_code
    model, _ = load("clip", crafted)  # the weights read as ever; the code is never run
    assert_same_outputs(model, ref.reference)
    assert not marker.exists()


@pytest.mark.parametrize(("family", "fmt"), [("dino", None), ("mocov3", None), ("mae", None), ("beit", None),
                                             ("clip", None), ("dino", "timm")])
def test_pickled_payload_never_runs(tmp_path: Path, family: str, fmt: str | None) -> None:
    path = tmp_path / f"{family}-crafted.pth"
    torch.save({"model": payload(tmp_path / "live"), "state_dict": {}}, path)
    torch.load(path, weights_only=False)
    assert (tmp_path / "live").exists()  # the payload runs under an unrestricted torch.load
    marker = tmp_path / "marker"
    torch.save({"model": payload(marker), "state_dict": {}}, path)
    name = fmt or FAMILY_FORMAT[family]
    expected = rf"{path.name}' cannot be read as format '{name}': refused to load global exec; checkpoints are read"
    with pytest.raises(CheckpointError, match=expected + r" with torch\.load\(weights_only=True\)"):
        load(family, path, fmt)
    assert not marker.exists()


def test_npz_object_array_payload_never_runs(tmp_path: Path) -> None:
    path = tmp_path / "augreg-crafted.npz"
    arrays = {"embedding/kernel": np.array([payload(tmp_path / "live")], dtype=object)}
    np.savez(path, **arrays)
    np.load(path, allow_pickle=True)["embedding/kernel"]
    assert (tmp_path / "live").exists()
    np.savez(path, **{"embedding/kernel": np.array([payload(tmp_path / "marker")], dtype=object)})
    with pytest.raises(CheckpointError, match=rf"{path.name}' cannot be read as format 'augreg_npz'"):
        load("fs", path)
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate storage", r"data\.pkl: ViT-T-8-fp16/data/0 holds \d+ bytes, not the \d+ x 2-byte elements declared"),
        ("drop storage", r"data\.pkl: storage 0 is referenced, but ViT-T-8-fp16/data/0 is missing"),
        ("drop code", r"module class __torch__\.test_formats\.\w+ is not defined in the archive's code/"),
        ("second top folder", r"expected one <folder>/data\.pkl record .* found several"),
    ],
)
def test_damaged_torchscript_archive_names_file_and_record(files, tmp_path: Path, damage: str, message: str) -> None:
    path = files["clip"][0]
    top = path.stem

    def edit(name: str, blob: bytes) -> tuple[str, bytes]:
        if damage == "truncate storage" and name == f"{top}/data/0":
            return name, blob[:-2]
        if damage == "drop storage" and name == f"{top}/data/0":
            return "elsewhere/0", blob
        if damage == "drop code" and name.startswith(f"{top}/code/__torch__/test_formats"):
            return "elsewhere/" + name, blob
        if damage == "second top folder" and name == f"{top}/data.pkl":
            return "copy/data.pkl", blob
        return name, blob

    damaged = rewrite_zip(path, tmp_path / "ViT-damaged.pt", edit)
    if damage == "second top folder":
        with zipfile.ZipFile(damaged, "a") as archive:
            archive.writestr(f"{top}/data.pkl", zipfile.ZipFile(path).read(f"{top}/data.pkl"))
    expected = r"ViT-damaged\.pt' cannot be read as format 'openai_clip': " + message
    with pytest.raises(CheckpointError, match=expected) as e:
        load("clip", damaged)
    # only a well-formed archive this reader cannot follow gets the hint to trust its code
    assert ("trust_torchscript_code" in str(e.value)) == (damage == "drop code")
