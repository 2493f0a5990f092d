"""Helpers shared by the checkpoint format modules: safe reading, layout sniffing."""

from __future__ import annotations

import argparse
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

# Key patterns that identify each original release layout (used in error hints).
_SIGNATURES: tuple[tuple[str, str], ...] = (
    ("visual.class_embedding", "an OpenAI CLIP checkpoint (format 'openai_clip')"),
    ("Transformer/encoderblock_0/", "an AugReg .npz (format 'augreg_npz')"),
    ("module.base_encoder.", "a MoCo-v3 checkpoint (format 'mocov3')"),
    ("decoder_embed.", "a MAE pretrain checkpoint (format 'mae')"),
    ("rel_pos_bias.relative_position_bias_table", "a BEiT pt22k checkpoint (format 'beit')"),
    ("lm_head.", "a BEiT pretraining checkpoint (format 'beit')"),
    ("teacher", "a DINO full training checkpoint (use the *_pretrain.pth backbone file)"),
)


def torch_load(path: Path) -> Any:
    """``torch.load`` without executing code; read failures become ``ValueError``.

    Only tensors, containers and :class:`argparse.Namespace` (stored by several
    training scripts next to the weights) are unpickled.
    """
    if is_torchscript(path):
        raise ValueError("a TorchScript archive (as OpenAI CLIP releases are), not a pickled checkpoint")
    if is_npz(path):
        raise ValueError("a NumPy .npz archive (as AugReg releases are), not a pickled checkpoint")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as err:
        text = str(err)
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if refused:  # torch's own message suggests weights_only=False, i.e. running the file's code
            raise ValueError(
                f"refused to load global {refused.group(1)}; checkpoints are read with torch.load(weights_only=True) "
                "and may hold only tensors, containers, numbers, strings and argparse.Namespace"
            ) from err
        detail = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
        raise ValueError(f"{type(err).__name__}: {detail.group(1) if detail else _first_line(err)}") from err


def is_torchscript(path: Path) -> bool:
    """True for a TorchScript (``torch.jit.save``) zip archive."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def is_npz(path: Path) -> bool:
    """True for a NumPy ``.npz`` archive (a zip of ``.npy`` arrays)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return bool(names) and all(name.endswith(".npy") for name in names)


def jit_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a TorchScript archive through ``torch.jit.load``, on the CPU.

    This runs code from the archive: only for ``trust_torchscript_code: true``;
    :func:`vitscope.models.formats.torchscript.state_dict` reads the same without it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still reads
            module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as err:
        raise ValueError(f"RuntimeError: {_first_line(err)}") from err
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def tensor_dict(raw: Any, what: str) -> dict[str, torch.Tensor]:
    """``raw`` as a flat ``{name: tensor}`` dict, or ``TypeError`` describing it."""
    if not isinstance(raw, Mapping):
        raise TypeError(f"expected {what}, found a {type(raw).__name__}")
    bad = [k for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if bad:
        hint = sniff(_nested_keys(raw))
        raise TypeError(
            f"expected {what}; found non-tensor entries {bad[:5]}" + (f" (this looks like {hint})" if hint else "")
        )
    return dict(raw)


def wrapped_state(raw: Any, key: str, checkpoint: str, state: str) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` dict stored under ``raw[key]`` (training checkpoints that
    wrap their weights), or an error saying which layout was expected."""
    if not isinstance(raw, dict):
        raise TypeError(f"expected a dict with key {key!r}, found a {type(raw).__name__}")
    require(raw, key, checkpoint)
    return tensor_dict(raw[key], state)


def require(state: Mapping[str, Any], key: str, what: str) -> None:
    """``ValueError`` with a layout hint unless ``key`` is in ``state``."""
    if key not in state:
        hint = sniff(_nested_keys(state))
        raise ValueError(f"{key!r} not found: not {what}" + (f"; this looks like {hint}" if hint else ""))


def sniff(keys: Iterable[str]) -> str:
    """Best guess of the release layout a set of keys comes from ('' if unknown)."""
    keys = list(keys)
    for pattern, name in _SIGNATURES:
        if any(k == pattern or k.startswith(pattern) for k in keys):
            return name
    return ""


def to_float32(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors cast to float32 (releases in fp16 are run in fp32)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _nested_keys(raw: Mapping[str, Any]) -> list[str]:
    keys = [str(k) for k in raw]
    for value in raw.values():
        if isinstance(value, Mapping):
            keys.extend(str(k) for k in value)
    return keys


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
