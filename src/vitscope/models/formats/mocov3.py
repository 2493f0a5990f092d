"""``mocov3``: a MoCo-v3 ViT release (``vit-b-300ep.pth.tar``).

The training checkpoint holds ``{"state_dict": ..., "optimizer": ..., ...}``;
the backbone is under ``module.base_encoder.`` in timm's ViT layout. Dropped:
the projection MLP ``module.base_encoder.head.*``, the momentum encoder and
the predictor. MoCo-v3 uses a fixed 2-D sin-cos position embedding with a zero
CLS position; it is stored in the file and loaded from it. For another input
grid it is recomputed exactly (:func:`sincos_pos_embed`) rather than resampled.
ViT-S of MoCo-v3 has 12 heads (the zoo sets ``num_heads: 12``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..registry import CheckpointFormat, register_format
from .common import require, torch_load, wrapped_state

PREFIX = "module.base_encoder."


def read(path: Path) -> Any:
    """The pickled object (weights only)."""
    return torch_load(path)


def convert(raw: Any, model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The base encoder's state dict, head dropped; see the module docstring."""
    state = wrapped_state(raw, "state_dict", "a MoCo-v3 training checkpoint", "a MoCo-v3 state dict")
    require(state, PREFIX + "cls_token", f"a MoCo-v3 checkpoint (keys under {PREFIX!r})")
    dropped = sorted(k for k in state if not k.startswith(PREFIX) or k.startswith(PREFIX + "head."))
    out = {k[len(PREFIX) :]: v for k, v in state.items() if k not in dropped}
    target = model.state_dict().get("pos_embed")
    if target is not None and "pos_embed" in out and out["pos_embed"].shape != target.shape:
        grid = tuple(int(g) for g in model.patch_embed.grid_size)  # type: ignore[union-attr]
        out["pos_embed"] = sincos_pos_embed(grid, target.shape[-1])  # type: ignore[arg-type]
    return out, dropped


def sincos_pos_embed(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """MoCo-v3's fixed position embedding, (1, 1 + gh * gw, dim), CLS row zero.

    Tokens are row-major over the (gh, gw) grid. Channels are four quarters:
    sin(r * omega), cos(r * omega), sin(c * omega), cos(c * omega) for token
    row r and column c, omega_k = temperature ** (-k / (dim / 4)). (MoCo-v3's
    ``meshgrid(grid_w, grid_h)`` puts the row first despite its names; on the
    square grids it was trained on this is its embedding exactly.)
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    gh, gw = grid
    rows, cols = torch.meshgrid(
        torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32), indexing="ij"
    )
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    out_r = rows.reshape(-1, 1) * omega
    out_c = cols.reshape(-1, 1) * omega
    spatial = torch.cat([out_r.sin(), out_r.cos(), out_c.sin(), out_c.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), spatial])[None]


FORMAT = register_format(CheckpointFormat(name="mocov3", read=read, convert=convert, description=__doc__ or ""))
