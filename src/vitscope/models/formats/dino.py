"""``dino``: a DINO backbone release (``dino_vitbase16_pretrain.pth``).

A plain state dict of the teacher backbone whose keys already follow timm's
ViT layout (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``);
no key is renamed or dropped. Wrapped checkpoints (``{"model": ...}``,
``{"teacher": ...}``) belong to other releases and are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..registry import CheckpointFormat, register_format
from .common import tensor_dict, torch_load


def read(path: Path) -> Any:
    """The pickled object (weights only)."""
    return torch_load(path)


def convert(raw: Any, model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict as is: DINO's backbone keys are timm's."""
    return tensor_dict(raw, "a plain DINO backbone state dict"), []


FORMAT = register_format(CheckpointFormat(name="dino", read=read, convert=convert, description=__doc__ or ""))
