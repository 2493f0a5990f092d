"""Exact attention probabilities, a chunk of images at a time: the extraction's fast path.

timm's explicit attention (``fused_attn = False``) materialises the probabilities of the
whole batch, (B, H, T, T), passes them through ``attn_drop`` (where a forward hook can read
them) and multiplies them with the values. Every reduction the recorders apply then reads
that tensor from main memory again, several times: for ViT-S/16 and a batch of 32 it is
30 MB per block, well beyond any cache.

:func:`tap` reads the probabilities of a module either way:

- ``rows=None`` (the **explicit** reference path, ``extract.attention: explicit``): a forward
  hook on ``attn_drop`` of timm's explicit path; every listener sees the whole batch
  (``start`` 0).
- ``rows=R`` (the **blockwise** path, the default): the module's forward is replaced by
  :func:`blockwise_forward`, the same operations as timm's explicit path applied to R images
  at a time: scores, softmax, the listeners, then the product with the values. The listeners
  run on each chunk while its probabilities are still in the cache, and the batch's
  (B, H, T, T) never exists. :func:`chunk_rows` picks R so a chunk holds about
  :data:`CHUNK_BYTES` of probabilities on the CPU, and the whole batch on an accelerator
  (where one kernel per block, :mod:`.fused`, reads it once).

Both paths compute every probability with the same torch operations on the same values,
so they agree to float rounding (on this project's CPU, bit for bit:
tests/test_blockwise.py); the parity check of every extraction compares the path's
output tokens with timm's fused forward on the first batch (``parity_max_abs_diff``).

Only timm's ``Attention`` (ViT, DeiT, DINO, MoCo v3, MAE, CLIP, registers) is run blockwise,
and only in eval mode without a mask; any other attention module (BEiT's, with its relative
position bias) falls back to the explicit path, and :func:`path` says which a model runs.
A module whose ``fused_attn`` is True runs timm's own fused forward unchanged (the parity
reference).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["CHUNK_BYTES", "Listener", "blockwise_forward", "chunk_rows", "path", "supports", "tap"]

#: the probabilities one chunk holds on the CPU: a few MiB stay in this machine's L2 + L3 caches
#: (benchmarks/attention_reductions.py --blockwise measures the choice)
CHUNK_BYTES = 4 << 20

#: ``listener(probs, start, total)``: probs (R, H, T, T) are the batch rows start .. start + R
#: of a batch of ``total`` images
Listener = Callable[[torch.Tensor, int, int], None]

_ATTR = "_vitscope_taps"  # on a module run blockwise: (rows, [listeners])


def _timm_attention() -> type[nn.Module] | None:
    try:
        from timm.layers.attention import Attention
    except ImportError:  # pragma: no cover - timm moved it
        return None
    return Attention


def supports(module: nn.Module) -> bool:
    """Whether :func:`blockwise_forward` reproduces ``module``'s explicit forward: timm's
    ``Attention`` itself (not a subclass, which may change the forward)."""
    cls = _timm_attention()
    return cls is not None and type(module) is cls


def chunk_rows(heads: int, tokens: int, batch: int, device: torch.device) -> int:
    """Images per chunk: ~:data:`CHUNK_BYTES` of float32 probabilities (H, T, T) per chunk
    on the CPU, at least 1; the whole ``batch`` on other devices."""
    if device.type != "cpu":
        return max(1, batch)
    return max(1, min(batch, CHUNK_BYTES // max(1, heads * tokens * tokens * 4)))


def blockwise_forward(module: nn.Module, x: torch.Tensor, attn_mask: Any = None, is_causal: bool = False) -> Any:
    """timm's explicit attention forward, ``rows`` images at a time, the listeners of
    ``module`` called on each chunk's probabilities (R, H, T, T).

    Runs timm's own forward instead when the module is fused, training or given a mask.
    """
    rows, listeners = getattr(module, _ATTR)
    if module.fused_attn or module.training or attn_mask is not None or is_causal:
        return type(module).forward(module, x, attn_mask=attn_mask, is_causal=is_causal)
    b, n, c = x.shape
    gate = module.gate(x).sigmoid() if getattr(module, "gate", None) is not None else None
    qkv = module.qkv(x).reshape(b, n, 3, module.num_heads, module.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = module.q_norm(q), module.k_norm(k)
    q = q * module.scale
    outs = []
    for start in range(0, b, rows):
        stop = min(b, start + rows)
        attn = q[start:stop] @ k[start:stop].transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        for listener in listeners:
            listener(attn, start, b)
        outs.append(attn @ v[start:stop])
        del attn
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    out = out.transpose(1, 2).reshape(b, n, getattr(module, "attn_dim", c))
    out = module.norm(out)
    if gate is not None:
        out = out * gate
    return module.proj_drop(module.proj(out))


class _Handle:
    def __init__(self, remove: Callable[[], None]) -> None:
        self.remove = remove


def tap(module: nn.Module, listener: Listener, rows: int | None) -> _Handle:
    """Call ``listener(probs, start, total)`` with ``module``'s attention probabilities on every
    explicit forward; returns a handle whose ``remove()`` undoes it.

    A module already run blockwise (an earlier tap) adds the listener to its chunks.
    Otherwise ``rows`` (images per chunk) runs it blockwise where :func:`supports`; with
    ``rows=None`` or an unsupported module, a forward hook on ``attn_drop`` hands the
    listener the whole batch.
    """
    state = getattr(module, _ATTR, None)
    if state is None and rows is not None and supports(module):
        state = (max(1, int(rows)), [])
        setattr(module, _ATTR, state)
        module.forward = blockwise_forward.__get__(module)  # an instance attribute: the class is untouched
    if state is not None:
        listeners = state[1]
        listeners.append(listener)

        def remove() -> None:
            if listener in listeners:
                listeners.remove(listener)
            if not listeners and getattr(module, _ATTR, None) is state:
                delattr(module, _ATTR)
                del module.forward

        return _Handle(remove)
    hook = module.attn_drop.register_forward_hook(lambda m, args, output: listener(output, 0, output.shape[0]))
    return _Handle(hook.remove)


def path(model: nn.Module) -> str:
    """``blockwise (R images per chunk)``, ``explicit``, or ``mixed`` (some modules each way):
    how the tapped attention modules of ``model``'s blocks run now."""
    states = [getattr(block.attn, _ATTR, None) for block in model.blocks]
    if all(s is None for s in states):
        return "explicit"
    if any(s is None for s in states):
        return "mixed"
    rows = sorted({s[0] for s in states})
    return f"blockwise ({', '.join(map(str, rows))} images per chunk)"
