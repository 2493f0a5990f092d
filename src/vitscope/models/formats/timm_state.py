"""``timm``: a plain timm state dict (``.pth``/``.pt``/``.bin`` or ``.safetensors``).

Also accepts the common wrappers ``{"state_dict": ...}`` and ``{"model": ...}``.
Classifier weights (``head.*``) are dropped: vitscope builds models without a head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..registry import CheckpointFormat, register_format
from .common import torch_load


def read(path: Path) -> Any:
    """The file's tensors: safetensors, or a pickle read with ``weights_only`` (no code runs)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch_load(path)


def unwrap(raw: Any) -> dict[str, torch.Tensor]:
    """The state dict inside common checkpoint wrappers."""
    if not isinstance(raw, dict):
        raise TypeError(f"expected a dict of tensors, found {type(raw).__name__}")
    for key in ("state_dict", "model", "module"):
        if key in raw and isinstance(raw[key], dict):
            return unwrap(raw[key])
    if not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise TypeError("expected a dict of tensors")
    return raw


def convert(raw: Any, model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    state = unwrap(raw)
    target = model.state_dict()
    dropped = sorted(k for k in state if k.startswith(("head.", "fc_norm.")) and k not in target)
    return {k: v for k, v in state.items() if k not in dropped}, dropped


FORMAT = register_format(
    CheckpointFormat(name="timm", read=read, convert=convert, description=__doc__ or "")
)
