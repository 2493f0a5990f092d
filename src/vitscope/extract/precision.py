"""The precision of the forward pass (``extract.precision``) and its measured error.

:func:`numerics` runs the model's matrix products and attention in the chosen
precision, scoped to the pass:

- ``fp32``: torch's defaults, untouched (the dumps of earlier versions, bit for bit);
- ``tf32``: on CUDA, ``torch.backends.cuda.matmul.allow_tf32`` and
  ``torch.backends.cudnn.allow_tf32`` on (float32 storage, TF32 tensor-core
  products), restored afterwards; elsewhere TF32 does not exist and the pass is
  plain float32 (``precision_matmul`` in the dump says ``float32``);
- ``bf16``, ``fp16``: ``torch.autocast`` on the model's device. The softmax runs in
  float32 on the low-precision logits (CUDA's autocast does this itself; on other
  devices :class:`Float32Softmax` makes it so), so the probabilities the hooks read
  have float32's range: a spatial row keeps its mass where float32 keeps it, and
  float16's range (smallest normal 6e-5) cannot create zero-mass rows
  (docs/attention.md).

The recorders never compute in low precision: their hooks run with autocast off
(:func:`exact`) on float32 values, a bfloat16 or float16 tensor copied to float32
first (:class:`vitscope.extract.hooks.Recorder`), and every sum over images stays float64.

:func:`errors` compares a batch's products recorded in the chosen precision with
the same batch recorded in float32 (one extra forward of the first batch,
:mod:`.run`): per dump dataset, the largest absolute difference and that
difference relative to the largest absolute float32 value (docs/dumps.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..io.dumps import PRECISIONS
from . import blockwise

__all__ = [
    "PRECISIONS", "Float32Softmax", "errors", "exact", "first_image_maps", "matmul_precision", "numerics",
    "uses_autocast",
]

#: the torch dtype autocast runs in, for the precisions that use autocast
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def uses_autocast(precision: str) -> bool:
    """Whether ``precision`` runs the forward under ``torch.autocast``."""
    return precision in AUTOCAST


def matmul_precision(precision: str, device: torch.device) -> str:
    """What the matrix products of the forward compute in on ``device``: ``float32``,
    ``tf32``, ``bfloat16`` or ``float16`` (``tf32`` is float32 off CUDA)."""
    if precision in AUTOCAST:
        return str(AUTOCAST[precision]).removeprefix("torch.")
    return "tf32" if precision == "tf32" and device.type == "cuda" else "float32"


class Float32Softmax(TorchFunctionMode):
    """Every softmax of a bfloat16 or float16 tensor computed in float32 (and returned
    in float32), as CUDA's autocast does; on the CPU, autocast keeps the softmax in the
    low precision (float16 probabilities below 6e-8 would round to 0)."""

    SOFTMAX = frozenset({torch.Tensor.softmax, torch.softmax, torch.nn.functional.softmax, torch.special.softmax})

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in self.SOFTMAX and args and args[0].dtype in (torch.bfloat16, torch.float16):
            args = (args[0].float(), *args[1:])
        return func(*args, **kwargs)


@contextlib.contextmanager
def numerics(precision: str, device: torch.device) -> Iterator[None]:
    """The forward's matrix products and attention in ``precision`` on ``device`` (module
    docstring), restored on exit."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "fp32" or (precision == "tf32" and device.type != "cuda"):
        yield
        return
    if precision == "tf32":
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        return
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast(device.type, dtype=AUTOCAST[precision]))
        if device.type != "cuda":
            stack.enter_context(Float32Softmax())
        yield


def exact(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off (what the recorders' hooks run under), where the pass uses it."""
    if uses_autocast(precision):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


@contextlib.contextmanager
def first_image_maps(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """While inside, keep the attention probabilities of the batch's first image, block by
    block (:func:`vitscope.extract.blockwise.tap` on every block's attention: the path a
    recorder attached before runs, else the explicit path's ``attn_drop``); on exit the dict
    holds them as ``exemplars/attention`` (1, L, H, T, T) float32: the precision check's
    measure of the full maps (an exemplar's maps are one image's maps)."""
    found: list[torch.Tensor] = []
    out: dict[str, torch.Tensor] = {}

    def keep(probs: torch.Tensor, start: int, total: int) -> None:
        if start == 0:
            found.append(probs[0].float().clone())

    handles = [blockwise.tap(block.attn, keep, rows=None) for block in model.blocks]
    try:
        yield out
    finally:
        for handle in handles:
            handle.remove()
    if found:
        out["exemplars/attention"] = torch.stack(found)[None]


def errors(
    got: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
) -> dict[str, tuple[float, float]]:
    """dataset -> (max |got - reference|, that / max |reference|), over the names in both.

    Compared in float64 where both are finite; a NaN or infinity in one and not the
    other (a row whose zero mass differs, an overflow) makes both errors infinite.
    The relative error is normwise (a 0/0 is 0: both all zero); elementwise ratios
    are undefined where float32 gives 0.
    """
    out: dict[str, tuple[float, float]] = {}
    for name in sorted(set(got) & set(reference)):
        a, r = got[name].to(torch.float64), reference[name].to(torch.float64)
        if a.shape != r.shape:
            raise ValueError(f"{name}: shapes {tuple(a.shape)} and {tuple(r.shape)} differ")
        fa, fr = torch.isfinite(a), torch.isfinite(r)
        kinds = {"nan": 0.0, "posinf": 1.0, "neginf": -1.0}  # NaN, +inf, -inf told apart
        if not torch.equal(fa, fr) or not torch.equal(a[~fa].nan_to_num(**kinds), r[~fr].nan_to_num(**kinds)):
            out[name] = (float("inf"), float("inf"))
            continue
        diff = float((a[fa] - r[fr]).abs().max()) if bool(fa.any()) else 0.0
        scale = float(r[fr].abs().max()) if bool(fr.any()) else 0.0
        out[name] = (diff, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf")))
    return out
