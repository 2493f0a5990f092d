"""``beit``: a self-supervised BEiT release (``beit_base_patch16_224_pt22k.pth``).

The pretraining checkpoint holds ``{"model": ...}`` in timm's BEiT layout
(``blocks.{i}.attn.{qkv.weight,q_bias,v_bias,proj}``, ``gamma_1``/``gamma_2``
layer scale, ``norm``) with one relative position bias shared by every block,
``rel_pos_bias.relative_position_bias_table`` (num_relative_distance, H).
vitscope builds timm's BEiT with a bias per block (``use_rel_pos_bias``) and
copies the shared table into every block's attention (added to a block's own
table where the file has one too: both index the same window). Dropped: the
masked-image-modelling head ``lm_head.*``, ``mask_token`` and the index
buffers ``*relative_position_index`` (timm recomputes them). There is no
absolute position embedding. A fine-tuned BEiT (``head``/``fc_norm``) is
refused: the study used the self-supervised weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..registry import CheckpointFormat, register_format
from .common import require, torch_load, wrapped_state

SHARED = "rel_pos_bias.relative_position_bias_table"
DROPPED_PREFIXES = ("lm_head.", "mask_token")


def read(path: Path) -> Any:
    """The pickled object (weights only)."""
    return torch_load(path)


def convert(raw: Any, model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The encoder's state dict with the shared bias copied into every block."""
    state = wrapped_state(
        raw,
        "model",
        "a BEiT pretraining checkpoint ({'model': state dict})",
        "a BEiT state dict under 'model'",
    )
    if "head.weight" in state or "fc_norm.weight" in state:
        raise ValueError("a fine-tuned BEiT (has head/fc_norm); use the self-supervised pt22k release")
    require(state, "blocks.0.attn.q_bias", "a BEiT checkpoint")
    dropped = sorted(k for k in state if k.startswith(DROPPED_PREFIXES) or k.endswith("relative_position_index"))
    out = {k: v for k, v in state.items() if k not in dropped and k != SHARED}
    if SHARED in state:
        blocks = sorted({int(k.split(".")[1]) for k in out if k.startswith("blocks.")})
        for i in blocks:
            key = f"blocks.{i}.attn.relative_position_bias_table"
            out[key] = state[SHARED].clone() + out.get(key, 0.0)
    return out, dropped


FORMAT = register_format(CheckpointFormat(name="beit", read=read, convert=convert, description=__doc__ or ""))
