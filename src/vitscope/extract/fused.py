"""Per-block spatial attention reductions in one pass over the attention tensor.

Extraction reduces every block's attention probabilities (B, H, T, T) to

- the attention distance per image, block and head: the mean over spatial
  queries of sum_k a[q, k] d(q, k) with the spatial rows renormalised
  (docs/protocols.md#attention-analyses), and
- the float64 sum over images of the renormalised spatial-query attention
  (H, G, G), from which the averaged spatial attention and the aligned map follow.

:func:`reduce_reference` is the plain torch version (several passes over the
tensor: slice, row sums, division, product with the distance matrix, float64
reduction); it runs on the CPU and wherever Triton is missing. On CUDA,
:func:`reduce_spatial` runs one Triton kernel that reads each spatial row once,
keeps the row sum and the distance-weighted sum in registers and adds the
renormalised row to a float64 accumulator, so the per-block cost is one read
of the (B, H, G, G) slice (docs/performance.md has the measurements).

Both return per-query distances in float32 (the model's precision, as before)
and add the renormalised rows to the float64 sum; they agree to float32
rounding (tests/test_fused.py, benchmarks/attention_reductions.py).

Zero-mass rule (docs/attention.md): a spatial row whose float32 sum over the
spatial keys is below :data:`MIN_MASS`, the smallest normal float32 (0: all of the
query's mass on prefix keys; subnormal: underflow has destroyed the distribution,
and the two paths' roundings of it differed by up to 25 %), adds nothing to the sum, gets
the per-query distance NaN (the caller averages the other queries) and is counted
per head in ``zeros``. Both paths test float32 row sums of the same values.
"""

from __future__ import annotations

import os

import torch

from . import reductions

try:  # Triton ships with CUDA builds of torch; CPU-only installs go without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

__all__ = ["available", "reduce_reference", "reduce_spatial"]

#: smallest spatial mass of a row that is renormalised: float32's smallest normal number
MIN_MASS = torch.finfo(torch.float32).tiny

#: largest spatial grid (G = gh * gw tokens) one kernel row holds; larger grids use torch
MAX_TOKENS = 4096


def available(device: torch.device) -> bool:
    """Whether :func:`reduce_spatial` runs the fused kernel on ``device``.

    Triton on CUDA, or Triton's CPU interpreter when ``TRITON_INTERPRET=1`` (tests).
    ``VITSCOPE_FUSED=0`` turns the kernel off (the torch reference runs instead).
    """
    if triton is None or os.environ.get("VITSCOPE_FUSED", "1") == "0":
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def reduce_reference(
    attn: torch.Tensor,
    prefix: int,
    dist: torch.Tensor,
    total: torch.Tensor | None,
    distance: bool,
    zeros: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """attn (B, H, T, T) float32 -> per-query distance (B, H, G) float32, or None.

    ``dist``: (G, G) float32 token distances. With ``total`` (H, G, G) float64,
    adds the sum over images of the renormalised spatial rows to it in place.
    Rows are renormalised over spatial keys when ``prefix`` > 0; a row with zero
    spatial mass adds nothing, has distance NaN and is counted in ``zeros`` ((H,)
    int64, added to in place) when given.
    """
    raw = attn[..., prefix:, prefix:].float()
    spatial, empty, mass = raw, None, None
    if prefix > 0:
        mass = raw.sum(dim=-1, keepdim=True)
        empty = ~(mass >= MIN_MASS)
        mass.masked_fill_(empty, float("inf"))  # a zero-mass row becomes 0
        if zeros is not None:
            zeros.add_(empty.sum(dim=(0, 2, 3)))
        if total is not None:
            spatial = raw / mass  # one pass
    if total is not None:
        reductions.accumulate(total, spatial)
    if not distance:
        return None
    # sum_k a[q, k] d(q, k) over the raw spatial row, then divided by the row's mass (as the
    # kernel does); an elementwise product and a row sum: einsum's batched product was 4x slower
    per_query = (raw * dist).sum(dim=-1)
    if mass is None:
        return per_query
    return per_query.div_(mass[..., 0]).masked_fill_(empty[..., 0], float("nan"))


def reduce_spatial(
    attn: torch.Tensor,
    prefix: int,
    dist: torch.Tensor,
    total: torch.Tensor | None,
    distance: bool,
    zeros: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Same contract as :func:`reduce_reference`; one fused kernel where :func:`available`."""
    b, h, t, _ = attn.shape
    g = t - prefix
    fits = attn.dtype == torch.float32 and attn.stride(-1) == 1 and g <= MAX_TOKENS
    if not (available(attn.device) and fits and (distance or total is not None or zeros is not None)):
        return reduce_reference(attn, prefix, dist, total, distance, zeros)
    per_query = torch.empty(b, h, g, dtype=torch.float32, device=attn.device) if distance else attn
    sums = total if total is not None else attn
    count = zeros is not None and prefix > 0
    empty = torch.empty(h, g, dtype=torch.int32, device=attn.device) if count else attn
    block = triton.next_power_of_2(g)
    _spatial_kernel[(h * g,)](
        attn, dist, sums, per_query, empty,
        b, h, g, prefix,
        attn.stride(0), attn.stride(1), attn.stride(2),
        MIN_MASS=MIN_MASS,
        BLOCK=block, RENORM=prefix > 0, DISTANCE=distance, ACCUMULATE=total is not None, COUNT=count,
        num_warps=4 if block >= 512 else 2,
    )  # fmt: skip
    if count:
        zeros.add_(empty.sum(dim=1))
    return per_query if distance else None


if triton is not None:

    # B (images in the batch) is not specialised on: a short last batch would otherwise
    # compile a second variant (Triton specialises integers on divisibility by 16)
    @triton.jit(do_not_specialize=["B"])
    def _spatial_kernel(
        attn_ptr, dist_ptr, sum_ptr, dist_out_ptr, zero_ptr,
        B, H, G, prefix,
        stride_b, stride_h, stride_q,
        MIN_MASS: tl.constexpr,
        BLOCK: tl.constexpr, RENORM: tl.constexpr, DISTANCE: tl.constexpr, ACCUMULATE: tl.constexpr,
        COUNT: tl.constexpr,
    ):  # fmt: skip
        """One program per (head, spatial query): loop over the images of the batch.

        A row with spatial mass below MIN_MASS (RENORM only) adds nothing to the sum, stores the
        distance NaN and is counted in zero_ptr[head, query] (int32, over the batch)."""
        pid = tl.program_id(0)
        head = pid // G
        query = pid % G
        keys = tl.arange(0, BLOCK)
        mask = keys < G
        weights = tl.load(dist_ptr + query * G + keys, mask=mask, other=0.0)
        acc = tl.zeros([BLOCK], dtype=tl.float64)
        row_ptr = attn_ptr + head * stride_h + (prefix + query) * stride_q + prefix + keys
        empty = tl.sum(tl.zeros([BLOCK], dtype=tl.int32), axis=0)  # an int32 scalar, loop-carried
        for image in range(0, B):
            row = tl.load(row_ptr + image * stride_b, mask=mask, other=0.0)
            if RENORM:
                norm = tl.sum(row, axis=0)
                ok = norm >= MIN_MASS
                safe = tl.where(ok, norm, 1.0)
                empty += tl.where(ok, 0, 1)
            else:
                ok = True
                safe = 1.0
            if DISTANCE:
                weighted = tl.sum(row * weights, axis=0)
                tl.store(dist_out_ptr + (image * H + head) * G + query, tl.where(ok, weighted / safe, float("nan")))
            if ACCUMULATE:
                acc += tl.where(ok, row / safe, 0.0).to(tl.float64)
        if ACCUMULATE:
            out = sum_ptr + (head * G + query) * G + keys
            tl.store(out, tl.load(out, mask=mask, other=0.0) + acc, mask=mask)
        if COUNT:
            tl.store(zero_ptr + head * G + query, empty)
