"""``mae``: a MAE pretrain release (``mae_pretrain_vit_base.pth``), encoder only.

The weights are under ``"model"`` in timm's ViT layout. The decoder
(``decoder_*``) and ``mask_token``, present in the visualisation releases, are
dropped: vitscope runs the encoder on all patches, unmasked. A fine-tuned MAE
(``head``/``fc_norm``) is refused: the study used the pretrained encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..registry import CheckpointFormat, register_format
from .common import require, torch_load, wrapped_state

DROPPED_PREFIXES = ("decoder_", "mask_token")


def read(path: Path) -> Any:
    """The pickled object (weights only)."""
    return torch_load(path)


def convert(raw: Any, model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The encoder's state dict; decoder and mask token dropped."""
    state = wrapped_state(
        raw,
        "model",
        "a MAE checkpoint ({'model': encoder state dict})",
        "a MAE encoder state dict under 'model'",
    )
    if "head.weight" in state or "fc_norm.weight" in state:
        raise ValueError("a fine-tuned MAE (has head/fc_norm); use the pretrain encoder release")
    require(state, "blocks.0.attn.qkv.bias", "a MAE encoder (qkv with bias)")
    dropped = sorted(k for k in state if k.startswith(DROPPED_PREFIXES))
    return {k: v for k, v in state.items() if k not in dropped}, dropped


FORMAT = register_format(CheckpointFormat(name="mae", read=read, convert=convert, description=__doc__ or ""))
