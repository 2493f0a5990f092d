"""Cosine similarities whose ties and ranks do not depend on the BLAS kernel.

A float32 matrix product (numpy's OpenBLAS, torch's MKL) sums its D terms in an
order chosen by the kernel: it differs between CPUs (SSE, AVX2, AVX-512, FMA or
not) and, within one run, between positions in the product (a row in a block
edge is summed differently from one inside) and between chunk sizes. Two
identical bank rows can so get similarities a few ulp apart, and a "tie" is not
one. The rankers in vitscope therefore screen with the fast product and decide
with :func:`cosine64`, whose bits depend on the two rows alone.

:func:`cosine64` sums the D products in float64 one term after the other
(d = 0, 1, ..., D - 1) with elementwise numpy operations (each IEEE-754
correctly rounded, never fused): identical rows give identical bits, wherever
they sit, in whatever chunk, on any CPU.

**The screening bound** (:func:`margin`). Let s be the exact cosine of two rows,
u the unit roundoff of the screening dtype (2^-24 for float32, 2^-53 for
float64) and gamma_n = n u / (1 - n u). Normalising a row (sum of D squares in
any order, sqrt, division) gives each component with a relative error at most
gamma_{D+2}; the product of two such rows in any summation order, with or
without FMA, errs by at most gamma_D sum_d |q_d b_d| <= gamma_D (1 + gamma_{D+2})^2
(Cauchy-Schwarz on unit rows). So the screened value errs from s by at most
(2 + gamma_{D+2}) gamma_{D+2} + gamma_D (1 + gamma_{D+2})^2 <= 3.1 (D + 2) u
while (D + 2) u <= 0.01; the same argument in float64 bounds :func:`cosine64`
by 3.1 (D + 2) 2^-53. Both together: e = 8 (D + 2) u bounds |screened - cosine64|.

If v_k is the k-th largest screened value of a row, every column whose
cosine64 reaches the k-th largest cosine64 has a screened value of at least
v_k - 2e (at least k screened values are >= v_k, so the k-th cosine64 is
>= v_k - e, and that column's screened value is >= its cosine64 - e). The
candidates {screened >= v_k - margin}, margin = 2e = 16 (D + 2) u, hold the exact
top-k with all its ties; rescoring only them with :func:`cosine64` gives the
exact answer. For D = 768 in float32 the margin is 7.3e-4. Past (D + 2) u > 0.01
(D > 167,770 in float32) the bound is not claimed and the margin is infinite.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12  # norms are clamped to at least this (zero rows stay zero), as knn.normalize
BLOCK = 1 << 21  # elements of one operand handled at a time by :func:`norms64`


def dot64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fixed-order float64 dot products over the last axis.

    a: (..., D), b: (..., D), leading axes broadcast; returns (...) float64. The terms
    are added in d order, one elementwise operation each, so an element's bits depend
    on its two rows only (not on the position, the chunk, the SIMD width or the BLAS).
    Memory: both operands are copied transposed, (D, ...).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"dot64: feature sizes differ, {a.shape} and {b.shape}")
    at = np.ascontiguousarray(np.moveaxis(a, -1, 0))
    bt = np.ascontiguousarray(np.moveaxis(b, -1, 0))
    acc = np.zeros(np.broadcast_shapes(at.shape[1:], bt.shape[1:]), dtype=np.float64)
    term = np.empty_like(acc)
    for d in range(at.shape[0]):
        np.multiply(at[d], bt[d], out=term, dtype=np.float64)  # float32 x float32 is exact in float64
        acc += term
    return acc


def norms64(x: np.ndarray) -> np.ndarray:
    """(n, D) -> (n,) float64 L2 norms, each row's :func:`dot64` with itself (block by block)."""
    x = np.asarray(x)
    out = np.empty(x.shape[0], dtype=np.float64)
    step = max(1, BLOCK // max(1, x.shape[1]))
    for start in range(0, x.shape[0], step):
        rows = x[start : start + step]
        out[start : start + step] = np.sqrt(dot64(rows, rows))
    return out


def cosine64(
    a: np.ndarray, b: np.ndarray, norm_a: np.ndarray | None = None, norm_b: np.ndarray | None = None
) -> np.ndarray:
    """Cosine similarities in float64, position-independent: dot64(a, b) / (|a| |b|).

    a: (..., D), b: (..., D), leading axes broadcast; returns (...). ``norm_a``/``norm_b``:
    the rows' :func:`norms64` (shape a.shape[:-1] / b.shape[:-1]) when already known. Norms
    are clamped to :data:`EPS` (a zero row has similarity 0 to everything).
    """
    if norm_a is None:
        norm_a = np.sqrt(dot64(a, a))
    if norm_b is None:
        norm_b = np.sqrt(dot64(b, b))
    return dot64(a, b) / (np.maximum(norm_a, EPS) * np.maximum(norm_b, EPS))


def unit_roundoff(dtype: np.dtype | type) -> float:
    """u of a floating dtype (half the machine epsilon): 2^-24 for float32."""
    return float(np.finfo(dtype).eps) / 2


def margin(dim: int, dtype: np.dtype | type = np.float32, u: float | None = None) -> float:
    """Width below the k-th screened value that holds every exact top-k candidate (module docstring).

    16 (D + 2) u for screening in ``dtype`` (or with the unit roundoff ``u``, e.g. a torch
    dtype's) with D = ``dim`` features; ``inf`` past (D + 2) u > 0.01.
    """
    if u is None:
        u = unit_roundoff(dtype)
    if (dim + 2) * u > 0.01:
        return float("inf")
    return 16.0 * (dim + 2) * u


def floor_to(values: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """float64 ``values`` rounded down to ``dtype`` (so ``x >= floor_to(t)`` keeps every ``x >= t``)."""
    values = np.asarray(values, dtype=np.float64)
    out = values.astype(dtype)
    over = out.astype(np.float64) > values
    out[over] = np.nextafter(out[over], np.asarray(-np.inf, dtype=dtype))
    return out
