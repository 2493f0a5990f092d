"""``openai_clip``: an OpenAI CLIP release (``ViT-B-16.pt``), image tower only.

The releases are TorchScript archives, read without running their code by
:mod:`vitscope.models.formats.torchscript` (``torch.jit.load``, which runs the
archive's code, only with ``trust_torchscript_code: true``); a plain state dict
saved with ``torch.save`` is read too. They are usually in fp16, which is cast
to float32 as CLIP's own CPU loader does. The image tower lives under
``visual.``::

    visual.conv1.weight               -> patch_embed.proj.weight (no bias)
    visual.class_embedding (D)        -> cls_token (1, 1, D)
    visual.positional_embedding (T, D) -> pos_embed (1, T, D)
    visual.ln_pre                     -> norm_pre
    visual.transformer.resblocks.{i}.ln_1 / ln_2          -> blocks.{i}.norm1 / norm2
    ....attn.in_proj_weight / in_proj_bias / out_proj      -> attn.qkv / attn.proj
    ....mlp.c_fc / mlp.c_proj                              -> mlp.fc1 / mlp.fc2
    visual.ln_post                    -> norm
    visual.proj (D, E)                dropped (image-text projection; features are block outputs)
    everything outside visual.        dropped (text tower, logit_scale)

The timm architecture must use QuickGELU (``act_layer: quick_gelu``), as the
zoo's ``clip`` family does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..registry import CheckpointFormat, register_format
from . import torchscript
from .common import is_torchscript, jit_state_dict, require, tensor_dict, to_float32, torch_load

PREFIX = "visual."
_RENAMES = (
    ("transformer.resblocks.", "blocks."),
    ("conv1.", "patch_embed.proj."),
    ("ln_pre.", "norm_pre."),
    ("ln_post.", "norm."),
    (".ln_1.", ".norm1."),
    (".ln_2.", ".norm2."),
    (".attn.in_proj_weight", ".attn.qkv.weight"),
    (".attn.in_proj_bias", ".attn.qkv.bias"),
    (".attn.out_proj.", ".attn.proj."),
    (".mlp.c_fc.", ".mlp.fc1."),
    (".mlp.c_proj.", ".mlp.fc2."),
)


def read(path: Path) -> dict[str, torch.Tensor]:
    """The archive's state dict (TorchScript, or a plain ``torch.save`` dict); runs no code from the file."""
    if not is_torchscript(path):
        return torch_load(path)
    try:
        return torchscript.state_dict(path)
    except torchscript.UnsupportedArchive as err:
        raise ValueError(
            f"{err} (TorchScript read without running its code; for a file from a source you trust, "
            "trust_torchscript_code: true in the model's config reads it with torch.jit.load, which runs its code)"
        ) from err


def read_trusted(path: Path) -> dict[str, torch.Tensor]:
    """The state dict through ``torch.jit.load``: runs the archive's code (``trust_torchscript_code``)."""
    if not is_torchscript(path):
        return torch_load(path)
    return jit_state_dict(path)


def convert(raw: Any, model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename the image tower onto timm's CLIP ViT; see the module docstring."""
    state = tensor_dict(raw, "an OpenAI CLIP state dict")
    require(state, PREFIX + "class_embedding", "an OpenAI CLIP checkpoint")
    out: dict[str, torch.Tensor] = {}
    dropped = sorted(k for k in state if not k.startswith(PREFIX) or k == PREFIX + "proj")
    for key, value in to_float32(state).items():
        if key in dropped:
            continue
        out[rename(key[len(PREFIX) :])] = value
    out["cls_token"] = out["cls_token"].reshape(1, 1, -1)
    out["pos_embed"] = out["pos_embed"].unsqueeze(0)
    return out, dropped


def rename(key: str) -> str:
    """timm's name for an OpenAI ``visual.`` key (prefix removed)."""
    if key == "class_embedding":
        return "cls_token"
    if key == "positional_embedding":
        return "pos_embed"
    for old, new in _RENAMES:
        key = key.replace(old, new)
    return key


FORMAT = register_format(
    CheckpointFormat(
        name="openai_clip", read=read, convert=convert, description=__doc__ or "", read_trusted=read_trusted
    )
)
