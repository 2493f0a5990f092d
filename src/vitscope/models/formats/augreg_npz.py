"""``augreg_npz``: an AugReg ``.npz`` (google-research/vision_transformer, Flax layout).

The study's fully supervised ViTs (``fs``) are the AugReg in21k -> in1k
releases, e.g. ``B_16-i21k-300ep-...--imagenet2012-steps_20k-lr_0.01-res_224.npz``.
Arrays are named by their Flax module path::

    embedding/kernel                      (ph, pw, 3, D)  -> patch_embed.proj.weight (D, 3, ph, pw)
    cls                                   (1, 1, D)       -> cls_token
    Transformer/posembed_input/pos_embedding (1, T, D)    -> pos_embed
    Transformer/encoderblock_{i}/LayerNorm_0               -> blocks.{i}.norm1
        .../MultiHeadDotProductAttention_1/{query,key,value}/kernel (D, H, Dh) -> attn.qkv
        .../MultiHeadDotProductAttention_1/out/kernel (H, Dh, D) -> attn.proj
        .../LayerNorm_2                                    -> blocks.{i}.norm2
        .../MlpBlock_3/Dense_{0,1}/kernel  (in, out)       -> mlp.fc{1,2} (transposed)
    Transformer/encoder_norm                               -> norm
    head/*, pre_logits/*                                   dropped (no classifier)

Every array is accounted for: an array this mapping does not know is an error.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..registry import CheckpointFormat, register_format
from .common import is_npz, require, sniff

DROPPED_PREFIXES = ("head/", "pre_logits/")
_BLOCK = "Transformer/encoderblock_{}"
Take = Callable[[str], torch.Tensor]
_ATTN = "MultiHeadDotProductAttention_1"


def read(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz``, read eagerly (a damaged archive fails here)."""
    if not is_npz(path):
        raise ValueError("not a NumPy .npz archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: np.asarray(archive[name]) for name in archive.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise ValueError(f"{type(err).__name__}: {err}") from err


def convert(raw: Any, model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map the Flax arrays onto timm's ViT keys; see the module docstring."""
    if not isinstance(raw, dict) or not all(isinstance(v, np.ndarray) for v in raw.values()):
        raise TypeError(f"expected the arrays of an .npz, found {type(raw).__name__}")
    arrays = dict(raw)
    require(arrays, "embedding/kernel", "an AugReg .npz")
    take = _taker(arrays)
    state: dict[str, torch.Tensor] = {
        "patch_embed.proj.weight": take("embedding/kernel").permute(3, 2, 0, 1),
        "patch_embed.proj.bias": take("embedding/bias"),
        "cls_token": take("cls"),
        "pos_embed": take("Transformer/posembed_input/pos_embedding"),
        "norm.weight": take("Transformer/encoder_norm/scale"),
        "norm.bias": take("Transformer/encoder_norm/bias"),
    }
    i = 0
    while f"{_BLOCK.format(i)}/LayerNorm_0/scale" in arrays:
        state.update(_block(take, i))
        i += 1
    dropped = sorted(k for k in arrays if k.startswith(DROPPED_PREFIXES))
    unknown = sorted(k for k in arrays if k not in dropped)
    if unknown:
        raise ValueError(f"{len(unknown)} arrays have no place in a ViT: {', '.join(unknown[:5])}")
    return state, dropped


def _taker(arrays: dict[str, np.ndarray]) -> Take:
    """``take(name)``: pop one array as a float32 tensor, ``ValueError`` if absent."""

    def take(name: str) -> torch.Tensor:
        if name not in arrays:
            hint = sniff(arrays)
            raise ValueError(f"array {name!r} not found" + (f" (this looks like {hint})" if hint else ""))
        return torch.from_numpy(np.array(arrays.pop(name), dtype=np.float32))

    return take


def _block(take: Take, i: int) -> dict[str, torch.Tensor]:
    """timm keys of encoder block ``i``."""
    src, dst = _BLOCK.format(i), f"blocks.{i}"
    qkv_w = [take(f"{src}/{_ATTN}/{n}/kernel").flatten(1).T for n in ("query", "key", "value")]
    qkv_b = [take(f"{src}/{_ATTN}/{n}/bias").flatten() for n in ("query", "key", "value")]
    return {
        f"{dst}.norm1.weight": take(f"{src}/LayerNorm_0/scale"),
        f"{dst}.norm1.bias": take(f"{src}/LayerNorm_0/bias"),
        f"{dst}.attn.qkv.weight": torch.cat(qkv_w),
        f"{dst}.attn.qkv.bias": torch.cat(qkv_b),
        f"{dst}.attn.proj.weight": take(f"{src}/{_ATTN}/out/kernel").flatten(0, 1).T,
        f"{dst}.attn.proj.bias": take(f"{src}/{_ATTN}/out/bias"),
        f"{dst}.norm2.weight": take(f"{src}/LayerNorm_2/scale"),
        f"{dst}.norm2.bias": take(f"{src}/LayerNorm_2/bias"),
        f"{dst}.mlp.fc1.weight": take(f"{src}/MlpBlock_3/Dense_0/kernel").T,
        f"{dst}.mlp.fc1.bias": take(f"{src}/MlpBlock_3/Dense_0/bias"),
        f"{dst}.mlp.fc2.weight": take(f"{src}/MlpBlock_3/Dense_1/kernel").T,
        f"{dst}.mlp.fc2.bias": take(f"{src}/MlpBlock_3/Dense_1/bias"),
    }


FORMAT = register_format(CheckpointFormat(name="augreg_npz", read=read, convert=convert, description=__doc__ or ""))
