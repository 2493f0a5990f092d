"""Weighted k-NN classification, the DINO protocol (docs/protocols.md#downstream-tasks).

Features are L2-normalised; the similarity is the cosine; each of the top-k
neighbours votes for its class with weight exp(sim / T); the class scores are
sorted and top-1 / top-5 read off. The top-k is computed once at the largest k
and sliced for the smaller ones.

The tie rule (the reference uses ``torch.topk`` and ``sort``, whose tie order is
unspecified): the neighbours are ranked by their float64 cosine
(:func:`vitscope.cosine.cosine64`, summed in a fixed order, so its bits depend on
the two rows alone: identical bank rows tie exactly, on any CPU) and equal
similarities are taken in bank order (lower index first); classes with equal
score are ranked by class index (lower first).

How: a float32 product screens each bank chunk (its sums are ordered by the BLAS
kernel, so identical rows may differ by a few ulp there); every bank image within
:func:`vitscope.cosine.margin` (16 (D + 2) u, the float32 rounding bound; derived
in vitscope.cosine) of the running k-th screened value stays a candidate, and
the candidates (about k of them per query) are rescored with ``cosine64`` before
the final top-k. Both the query and the bank are processed in chunks, so memory
is O(query_chunk x (bank_chunk + k)) whatever the bank size; the neighbours and
their similarities are bit for bit the same whatever the chunk sizes and the BLAS.

Every block at once (:func:`nearest_blocks`, what :func:`block_rows` uses): the bank is
streamed in runs of images x all blocks (one contiguous read of the (N, L, D) dump layout,
so the bank is read once, not once per block), each block of a run normalised once, the
screening product and top-k in torch on the caller's device, and a running candidate set
per block kept by the same rule; the result is :func:`nearest` of each block, bit for bit.

A k larger than the bank is clipped to the bank size (every bank image votes);
the result rows keep the requested k.

Every row carries the counts behind it and its chance level: ``bank`` and ``queries``
(images), ``classes`` (C, the classes present in the memory bank, the ones a neighbour
can vote for), ``counted`` (m, the classes the metric counts: 1 for top-1, min(5, k, C)
for top-5, k clipped to the bank) and ``chance`` = m / C, the expected accuracy of a guess
that ignores the image and ranks the C classes uniformly at random (for any query set;
with a balanced memory bank it is also the accuracy of guessing in proportion to the
bank's class frequencies). The study's random-weight ViT-B/16 scored 0.10 % top-1 on
ImageNet, 1 / 1000.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import h5py
import numpy as np
import torch

from .. import cosine
from ..errors import DumpError
from ..io.dumps import require

log = logging.getLogger(__name__)

KS = (10, 20, 100, 200)
TEMPERATURE = 0.07
COLUMNS = ("model", "block", "metric", "k", "value", "note", "chance", "counted", "classes", "bank", "queries")


def normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of (n, D) scaled to unit L2 norm (all-zero rows stay zero), float32 or float64 kept."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def screen_similarity(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """(q, b) screening similarities of unit rows (q, D) and (b, D): the fast product (any BLAS)."""
    return queries @ bank.T


def _screen(values: np.ndarray, k: int, width_margin: float) -> np.ndarray:
    """Columns (q, w) of each row's candidates: every value >= (k-th largest - margin), w >= k.

    values: (q, c) screening similarities. All rows get the same w (the widest row's count);
    the narrower rows then carry a few extra columns below their threshold, which is harmless:
    the candidates are rescored exactly.
    """
    q, c = values.shape
    if c <= k:
        return np.broadcast_to(np.arange(c), (q, c))
    kth = np.partition(values, c - k, axis=1)[:, c - k]  # the k-th largest of each row
    threshold = cosine.floor_to(kth.astype(np.float64) - width_margin, values.dtype)
    width = max(k, int((values >= threshold[:, None]).sum(axis=1).max()))  # k: a NaN row counts nothing
    if width >= c:
        return np.broadcast_to(np.arange(c), (q, c))
    return np.argpartition(values, c - width, axis=1)[:, c - width :]


def _rescore(
    bank: Any, bank_norms: np.ndarray, queries: np.ndarray, idx: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of the candidates: (q, k) cosine64 similarities and bank indices, ties in bank order.

    bank: (N, D) raw rows; bank_norms: (N,) their norms64; queries: (q, D) raw rows;
    idx: (q, c) candidate bank indices (distinct within a row, c >= k).
    """
    q, c = idx.shape
    dim = queries.shape[1]
    sims = np.empty((q, c), dtype=np.float64)
    query_norms = cosine.norms64(queries)
    step = max(1, (1 << 21) // max(1, c * dim))  # 8 MiB of float32 rows gathered at a time
    for s0 in range(0, q, step):
        rows = idx[s0 : s0 + step]
        unique, inverse = np.unique(rows, return_inverse=True)
        gathered = np.asarray(bank[unique])[inverse.reshape(rows.shape)]  # (g, c, D)
        sims[s0 : s0 + step] = cosine.cosine64(
            queries[s0 : s0 + step, None, :], gathered, query_norms[s0 : s0 + step, None], bank_norms[rows]
        )
    order = np.lexsort((idx, -sims), axis=1)[:, :k]
    return np.take_along_axis(sims, order, 1), np.take_along_axis(idx, order, 1)


def nearest(
    bank: np.ndarray, queries: np.ndarray, k: int, query_chunk: int = 1024, bank_chunk: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k of every query in the bank.

    bank: (N, D), queries: (M, D), any scale (rows are L2-normalised here, chunk by chunk).
    Returns float64 similarities (:func:`vitscope.cosine.cosine64`) and bank indices, both
    (M, min(k, N)), best first, ties in bank order: the same bits whatever the chunk sizes.
    """
    n, dim = bank.shape
    k = min(k, n)
    dtype = np.result_type(bank.dtype, queries.dtype, np.float32)
    width_margin = cosine.margin(dim, dtype)
    bank_norms = np.concatenate([cosine.norms64(np.asarray(bank[b0:b1])) for b0, b1 in _chunks(n, bank_chunk)])
    out_vals = np.empty((queries.shape[0], k), dtype=np.float64)
    out_idx = np.empty((queries.shape[0], k), dtype=np.int64)
    for q0, q1 in _chunks(queries.shape[0], query_chunk):
        raw = np.asarray(queries[q0:q1])
        q = normalize(raw.astype(dtype))
        vals = np.empty((q1 - q0, 0), dtype=dtype)
        idx = np.empty((q1 - q0, 0), dtype=np.int64)
        for b0, b1 in _chunks(n, bank_chunk):
            sim = screen_similarity(q, normalize(np.asarray(bank[b0:b1], dtype=dtype))).astype(dtype, copy=False)
            cols = _screen(sim, k, width_margin)
            vals = np.concatenate([vals, np.take_along_axis(sim, cols, 1)], 1)
            idx = np.concatenate([idx, cols + b0], 1)
            keep = _screen(vals, k, width_margin)
            vals, idx = np.take_along_axis(vals, keep, 1), np.take_along_axis(idx, keep, 1)
        out_vals[q0:q1], out_idx[q0:q1] = _rescore(bank, bank_norms, raw, idx, k)
    return out_vals, out_idx


# --------------------------------------------------------------------------- every block, the bank read once

_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
#: elements of one operand of :func:`vitscope.cosine.cosine64` rescored at a time (32 MiB of float32)
RESCORE_ELEMENTS = 1 << 23


def _screen_torch(values: torch.Tensor, k: int, width_margin: float, extra: int = 64) -> torch.Tensor:
    """:func:`_screen` in torch: the same candidates, NaN counted as the largest value as
    ``np.partition`` counts it. values: (q, c); returns (q, w) int64 columns, w >= min(k, c).

    One sorted ``torch.topk`` of k + ``extra`` values gives the k-th value, each row's count of values
    at or above the threshold (from the sorted values alone when the last one is below it; the full row
    otherwise) and the w best columns; a second top-k only when w exceeds k + extra.
    """
    q, c = values.shape
    if c <= k:
        return torch.arange(c, device=values.device).expand(q, c)
    top = min(c, k + extra)
    best, cols = torch.topk(values, top, dim=1)  # sorted, NaN first (as the largest)
    dtype = np.dtype(str(values.dtype).removeprefix("torch."))
    threshold = cosine.floor_to(best[:, k - 1].cpu().numpy().astype(np.float64) - width_margin, dtype)
    limit = torch.from_numpy(threshold).to(values.device)[:, None]
    count = (best >= limit).sum(dim=1)
    if top < c:
        full = torch.nonzero(best[:, -1] >= limit[:, 0]).flatten()  # rows that may have more above it
        if full.numel():
            count[full] = (values[full] >= limit[full]).sum(dim=1)
    width = max(k, int(count.max()))  # k: a NaN row counts nothing
    if width >= c:
        return torch.arange(c, device=values.device).expand(q, c)
    if width <= top:
        return cols[:, :width]
    return torch.topk(values, width, dim=1, sorted=False).indices


def _threshold(values: torch.Tensor, k: int, width_margin: float) -> torch.Tensor:
    """(q,) floor(k-th largest - margin) of each row of the finite running candidates values: (q, w >= k)."""
    kth = torch.topk(values, k, dim=1).values[:, -1]
    dtype = np.dtype(str(values.dtype).removeprefix("torch."))
    return torch.from_numpy(cosine.floor_to(kth.cpu().numpy().astype(np.float64) - width_margin, dtype)).to(
        values.device
    )


def _above(values: torch.Tensor, threshold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The entries of values: (q, c) at or above each row's threshold (q,): (q, w) values and columns,
    rows padded with -inf and column -1 (w = the largest count, 0 when none)."""
    if values.device.type == "cpu":  # numpy's comparison and nonzero are several times faster there
        rows, cols_hit = _hits_cpu(values, threshold)
        hits = torch.stack([torch.from_numpy(rows), torch.from_numpy(cols_hit)], 1)
    else:
        hits = torch.nonzero(values >= threshold[:, None])  # (P, 2), by row then column
    q = values.shape[0]
    counts = torch.bincount(hits[:, 0], minlength=q)
    width = int(counts.max()) if hits.shape[0] else 0
    vals = torch.full((q, width), -torch.inf, dtype=values.dtype, device=values.device)
    cols = torch.full((q, width), -1, dtype=torch.int64, device=values.device)
    if width:
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(hits.shape[0], device=values.device) - starts[hits[:, 0]]
        vals[hits[:, 0], slot] = values[hits[:, 0], hits[:, 1]]
        cols[hits[:, 0], slot] = hits[:, 1]
    return vals, cols


#: columns per group of :func:`_hits_cpu`'s prefilter (a group's maximum decides whether it is compared)
HIT_GROUP = 64


def _hits_cpu(values: torch.Tensor, threshold: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the entries of values: (q, c) at or above each row's threshold (q,), by row then
    column: ``np.nonzero(values >= threshold[:, None])``, found through a prefilter.

    The hits are few (about k per row over a whole bank), and a ``nonzero`` over the (q, c) comparison
    costs ~1 ns per entry. So each row is cut into groups of :data:`HIT_GROUP` columns; one
    (multi-threaded) ``amax`` per group says which groups can hold a hit, and only those are compared.
    A group holding NaN is compared too (amax propagates NaN; NaN is never a hit, as in the comparison).
    """
    q, c = values.shape
    limit = threshold.numpy()
    full = (c // HIT_GROUP) * HIT_GROUP
    if full == 0:
        return np.nonzero(values.numpy() >= limit[:, None])
    groups = values[:, :full].view(q, full // HIT_GROUP, HIT_GROUP)
    top = torch.amax(groups, dim=2).numpy()  # (q, c // HIT_GROUP)
    g_rows, g_cols = np.nonzero((top >= limit[:, None]) | np.isnan(top))
    parts = groups.numpy()[g_rows, g_cols]  # (hit groups, HIT_GROUP)
    which, offset = np.nonzero(parts >= limit[g_rows, None])
    rows, cols = g_rows[which], g_cols[which] * HIT_GROUP + offset  # by row, then column
    if full < c:  # the last columns, fewer than a group
        t_rows, t_cols = np.nonzero(values.numpy()[:, full:] >= limit[:, None])
        rows, cols = np.concatenate([rows, t_rows]), np.concatenate([cols, t_cols + full])
        order = np.lexsort((cols, rows))
        rows, cols = rows[order], cols[order]
    return rows.astype(np.int64, copy=False), cols.astype(np.int64, copy=False)


def _cosine_pairs(a_t: np.ndarray, rows_a: np.ndarray, norms_a: np.ndarray, b_t: np.ndarray, rows_b: np.ndarray,
                  norms_b: np.ndarray) -> np.ndarray:
    """(P,) :func:`vitscope.cosine.cosine64` of the row pairs (a[rows_a[p]], b[rows_b[p]]), bit for bit.

    a_t: (D, n) and b_t: (D, n') the rows transposed (so a pair's terms are gathered without a transpose),
    norms_a, norms_b their :func:`vitscope.cosine.norms64`. The same operations as ``cosine64``: the D
    products formed in float64 and added in d order, then divided by the clamped norms; in steps of
    :data:`RESCORE_ELEMENTS`.
    """
    dim = a_t.shape[0]
    out = np.empty(rows_a.shape[0], dtype=np.float64)
    order = np.argsort(rows_b, kind="stable")  # gathered in bank order: near columns, few cache misses
    step = max(1, RESCORE_ELEMENTS // max(1, dim))
    for s0 in range(0, rows_a.shape[0], step):
        at = order[s0 : s0 + step]
        ia, ib = rows_a[at], rows_b[at]
        x, y = np.take(a_t, ia, axis=1), np.take(b_t, ib, axis=1)  # (D, s), C order
        out[at] = _dot_t(x, y) / (np.maximum(norms_a[ia], cosine.EPS) * np.maximum(norms_b[ib], cosine.EPS))
    return out


def _rescore_held(
    entries: list, query_chunks: list[tuple[int, int]], query_t: np.ndarray, query_norms: np.ndarray,
    raw_t: np.ndarray, norms: np.ndarray, b0: int, b1: int,
) -> None:
    """Rescore in place the candidates of bank rows b0 .. b1 (raw_t: (D, b1 - b0), norms: their norms64)
    held in one block's running sets ``entries`` (one (vals, idx, cos) per query chunk) with
    :func:`vitscope.cosine.cosine64` (through :func:`_cosine_pairs`, bit for bit)."""
    for (q0, _), entry in zip(query_chunks, entries, strict=True):
        if entry is None:
            continue
        idx_np, cos = entry[1].cpu().numpy(), entry[2]
        rows, cols = np.nonzero((idx_np >= b0) & (idx_np < b1))
        if rows.size:
            cos[rows, cols] = _cosine_pairs(query_t, q0 + rows, query_norms, raw_t, idx_np[rows, cols] - b0, norms)


def _transposed(x: np.ndarray, rows: int = 256) -> np.ndarray:
    """(b, D) -> its (D, b) C-contiguous transpose, copied ``rows`` rows at a time (cache-sized blocks:
    ~1.4x faster than one strided copy here)."""
    out = np.empty(x.shape[::-1], dtype=x.dtype)
    for s0 in range(0, x.shape[0], rows):
        out[:, s0 : s0 + rows] = x[s0 : s0 + rows].T
    return out


def _dot_t(x_t: np.ndarray, y_t: np.ndarray) -> np.ndarray:
    """:func:`vitscope.cosine.dot64` of the columns of x_t, y_t (D, s): the same float64 terms added in d order."""
    acc = np.zeros(x_t.shape[1], dtype=np.float64)
    term = np.empty_like(acc)
    for d in range(x_t.shape[0]):
        np.multiply(x_t[d], y_t[d], out=term, dtype=np.float64)
        acc += term
    return acc


#: images per read of :func:`_read_run`: HDF5 reads a run of one-image chunks ~1.8x faster in pieces of
#: 64 than in one selection (measured in docs/performance.md#k-nn-at-imagenet-scale)
READ_ROWS = 64


def _read_run(bank: Any, b0: int, b1: int) -> np.ndarray:
    """bank[b0:b1] as an array: one run of images x all blocks, read in order, once, in consecutive
    pieces of :data:`READ_ROWS` images (a numpy bank is sliced, not copied)."""
    if isinstance(bank, np.ndarray):
        return bank[b0:b1]
    first = np.asarray(bank[b0 : min(b1, b0 + READ_ROWS)])
    if first.shape[0] == b1 - b0:
        return first
    out = np.empty((b1 - b0, *first.shape[1:]), dtype=first.dtype)
    out[: first.shape[0]] = first
    for s0 in range(b0 + READ_ROWS, b1, READ_ROWS):
        s1 = min(b1, s0 + READ_ROWS)
        out[s0 - b0 : s1 - b0] = bank[s0:s1]
    return out


def nearest_blocks(
    bank: Any,
    queries: Any,
    k: int,
    query_chunk: int = 1024,
    bank_chunk: int = 65536,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`nearest` of every block at once, the bank read once: (L, M, min(k, N)) similarities and indices.

    bank: (N, L, D), queries: (M, L, D) (arrays or h5py datasets, e.g. a dump's ``tokens/cls``; float16
    rows are screened in float32). The bank is read in runs of ``bank_chunk`` images x all L blocks
    (``bank[b0:b1]``: one contiguous read of the (N, L, D) layout), so every byte of it is read once
    whatever L; the query set (small) is read once. Per block, each bank chunk is normalised once and
    screened against every query chunk with a float32 (float64 for float64 input) product and
    ``torch.topk`` on ``device`` (the caller's choice, default the CPU; TF32 products are refused),
    and a running candidate set is kept per block and query by the margin rule of
    :func:`vitscope.cosine.margin` (:func:`_screen_torch`, the rule of :func:`nearest`). A run's
    candidates are rescored with :func:`vitscope.cosine.cosine64` once the next run has been screened
    (its rows are kept until then), so the ones the next run displaces are never rescored. Once a block
    holds k finite candidates, a chunk's entries below the running k-th value minus the margin are dropped
    at once (:func:`_above`: they cannot reach the top-k, by the same bound); a non-finite query or bank row
    makes its block keep :func:`nearest`'s rule and chunking alone (NaN ranks first there). The result is
    bit for bit :func:`nearest` of each block (its ties included): every candidate set holds the exact
    top-k with its ties, and the final order is by cosine64 then bank index.

    Memory, whatever N: two bank runs (bank_chunk x L x D each: the one screened and the previous one,
    kept for the rescoring) and a normalised block, one screening product (query_chunk x bank_chunk) and
    the candidates, O(M x L x (k + a few)), besides the query set.
    """
    n, blocks, dim = bank.shape
    if queries.shape[1:] != (blocks, dim):
        raise ValueError(f"knn.nearest_blocks: bank (N, L, D) = {bank.shape} and queries {queries.shape} differ")
    k = min(k, n)
    query_raw = np.asarray(queries[...])  # (M, L, D): read once
    m = query_raw.shape[0]
    dtype = np.result_type(bank.dtype, query_raw.dtype, np.float32)
    if np.dtype(dtype) not in _TORCH_DTYPES:
        raise ValueError(f"knn.nearest_blocks: cannot screen dtype {dtype} (float16/32/64 rows)")
    width_margin = cosine.margin(dim, dtype)
    device = torch.device(device)
    tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    if device.type == "cuda" and tf32:
        # TF32 (u = 2^-11) would break the float32 bound that the margin rests on
        raise ValueError("knn.nearest_blocks: TF32 matrix products are enabled (torch.backends.cuda.matmul."
                         "allow_tf32 / set_float32_matmul_precision); the k-NN screening needs full float32")
    query_chunks = list(_chunks(m, query_chunk))
    query_unit = [torch.from_numpy(normalize(query_raw[:, b].astype(dtype))).to(device) for b in range(blocks)]
    query_norms = [cosine.norms64(query_raw[:, b]) for b in range(blocks)]
    query_t = [np.ascontiguousarray(query_raw[:, b].T) for b in range(blocks)]  # (D, M) for the rescoring
    del query_raw
    # per block and query chunk: screened values (q, w) on device, bank indices (q, w), cosine64 (q, w)
    state: list[list[tuple[torch.Tensor, torch.Tensor, np.ndarray] | None]] = [
        [None] * len(query_chunks) for _ in range(blocks)
    ]
    # blocks screened by the rule of nearest alone (a non-finite query or bank row seen: NaN ranks first there)
    exact_rule = [not bool(np.isfinite(q.numpy(force=True)).all()) for q in query_unit]
    buffer: torch.Tensor | None = None  # the screening product's memory
    # per block, the rows of the previous run: (D, b) transposed, their norms64, b0, b1
    held: list[tuple[np.ndarray, np.ndarray, int, int] | None] = [None] * blocks
    for b0, b1 in _chunks(n, bank_chunk):
        chunk = _read_run(bank, b0, b1)  # (b, L, D)
        for block in range(blocks):
            raw = chunk[:, block]
            raw_t = _transposed(raw)  # (D, b), for the rescoring
            norms = np.sqrt(_dot_t(raw_t, raw_t))  # cosine.norms64(raw), bit for bit
            # the screening's unit rows: divided by the float64 norm rounded to the screening dtype (within the
            # margin's bound on normalisation, vitscope.cosine), without a second norm or copy of the rows
            scale = np.maximum(norms, cosine.EPS).astype(dtype)
            unit = torch.from_numpy(np.divide(raw, scale[:, None], dtype=dtype)).to(device)
            exact_rule[block] |= not bool(np.isfinite(raw).all())
            for qi, (q0, q1) in enumerate(query_chunks):
                if buffer is None or buffer.numel() < (q1 - q0) * (b1 - b0):  # reused: no page faults per chunk
                    buffer = torch.empty((q1 - q0) * (b1 - b0), dtype=unit.dtype, device=device)
                sim = torch.matmul(query_unit[block][q0:q1], unit.T, out=buffer[: (q1 - q0) * (b1 - b0)].view(
                    q1 - q0, b1 - b0))  # (q, b)
                prev = state[block][qi]
                if prev is not None and not exact_rule[block] and prev[0].shape[1] >= k:
                    vals, cols = _above(sim, _threshold(prev[0], k, width_margin))
                    idx = torch.where(cols >= 0, cols + b0, cols)
                else:
                    cols = _screen_torch(sim, k, width_margin)
                    vals, idx = torch.take_along_dim(sim, cols, 1), cols + b0
                cos = np.full(tuple(cols.shape), -np.inf)
                if prev is not None:
                    vals, idx = torch.cat([prev[0], vals], 1), torch.cat([prev[1], idx], 1)
                    cos = np.concatenate([prev[2], cos], 1)
                keep = _screen_torch(vals, k, width_margin)
                vals, idx = torch.take_along_dim(vals, keep, 1), torch.take_along_dim(idx, keep, 1)
                cos = np.take_along_axis(cos, keep.cpu().numpy(), 1)  # -inf: not rescored yet
                state[block][qi] = (vals, idx, cos)
            # the previous run's candidates that are still held are rescored now, while its rows are kept: a
            # candidate displaced by the next run is never rescored (about a third fewer pairs than at once)
            if held[block] is not None:
                _rescore_held(state[block], query_chunks, query_t[block], query_norms[block], *held[block])
            held[block] = (raw_t, norms, b0, b1)
        del chunk
    for block in range(blocks):  # the last run's
        if held[block] is not None:
            _rescore_held(state[block], query_chunks, query_t[block], query_norms[block], *held[block])
        held[block] = None
    out_vals = np.empty((blocks, m, k), dtype=np.float64)
    out_idx = np.empty((blocks, m, k), dtype=np.int64)
    for block in range(blocks):
        for qi, (q0, q1) in enumerate(query_chunks):
            entry = state[block][qi]
            assert entry is not None
            idx_np = entry[1].cpu().numpy()
            order = np.lexsort((idx_np, -entry[2]), axis=1)[:, :k]
            out_vals[block, q0:q1] = np.take_along_axis(entry[2], order, 1)
            out_idx[block, q0:q1] = np.take_along_axis(idx_np, order, 1)
    return out_vals, out_idx


def vote(
    similarities: np.ndarray, labels: np.ndarray, k: int, num_classes: int, temperature: float = TEMPERATURE
) -> np.ndarray:
    """Class scores (M, C) from the first k neighbours: sum of exp(sim / T) per neighbour label.

    similarities: (M, K) sorted best first, labels: (M, K) their classes; k <= K.
    """
    weights = np.exp(similarities[:, :k].astype(np.float64) / temperature)
    scores = np.zeros((similarities.shape[0], num_classes), dtype=np.float64)
    rows = np.repeat(np.arange(similarities.shape[0]), k)
    np.add.at(scores, (rows, labels[:, :k].ravel()), weights.ravel())
    return scores


def counted_classes(metric: str, k: int, bank: int, num_classes: int) -> int:
    """How many ranked classes ``metric`` (top1 | top5) counts for ``k`` neighbours of a bank of
    ``bank`` images with ``num_classes`` classes: 1, or min(5, k clipped to the bank, classes)."""
    return 1 if metric == "top1" else min(5, min(k, bank), num_classes)


def with_chance(
    rows: Sequence[dict[str, Any]], train_labels: np.ndarray, queries: int, num_classes: int
) -> list[dict[str, Any]]:
    """``rows`` (COLUMNS without the counts) with ``chance``, ``counted``, ``classes``, ``bank`` and
    ``queries`` added (module docstring): chance = counted / classes present in the bank."""
    present = len(np.unique(train_labels))
    out = []
    for row in rows:
        counted = counted_classes(row["metric"], int(row["k"]), train_labels.size, num_classes)
        out.append({**row, "chance": min(1.0, counted / present), "counted": counted, "classes": present,
                    "bank": int(train_labels.size), "queries": int(queries)})
    return out


def classify(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    ks: Sequence[int] = KS,
    temperature: float = TEMPERATURE,
    query_chunk: int = 1024,
    bank_chunk: int = 65536,
) -> dict[int, dict[str, float]]:
    """Weighted k-NN accuracy for each k: {k: {"top1": fraction, "top5": fraction}}.

    train_features: (N, D) memory bank, train_labels: (N,) in [0, C); test_features:
    (M, D) queries, test_labels: (M,). The top-k is computed once at max(ks) (clipped to
    N) and sliced; top-5 counts the first min(5, C) ranked classes (DINO: min(5, k)).
    """
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    _check_labels(train_features.shape[0], train_labels, test_features.shape[0], test_labels, num_classes)
    sims, idx = nearest(train_features, test_features, max(ks), query_chunk, bank_chunk)
    return accuracy(sims, idx, train_labels, test_labels, num_classes, ks, temperature)


def accuracy(
    sims: np.ndarray,
    idx: np.ndarray,
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    ks: Sequence[int] = KS,
    temperature: float = TEMPERATURE,
) -> dict[int, dict[str, float]]:
    """:func:`classify` from the neighbours: sims, idx (M, K) of :func:`nearest` (K = min(max(ks), N)),
    train_labels (N,), test_labels (M,) in [0, C)."""
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    neighbour_labels = train_labels[idx]
    results = {}
    for k in ks:
        kk = min(k, sims.shape[1])
        scores = vote(sims, neighbour_labels, kk, num_classes, temperature)
        ranked = np.argsort(-scores, axis=1, kind="stable")
        hits = ranked == test_labels[:, None]
        results[int(k)] = {
            "top1": float(hits[:, 0].mean()),
            "top5": float(hits[:, : min(5, kk, num_classes)].any(axis=1).mean()),
        }
    return results


def _check_labels(n: int, train_labels: np.ndarray, m: int, test_labels: np.ndarray, num_classes: int) -> None:
    if n != train_labels.shape[0] or m != test_labels.shape[0]:
        raise ValueError("knn.classify: features and labels differ in length")
    if train_labels.size == 0 or test_labels.size == 0:
        raise ValueError("knn.classify: empty memory bank or query set")
    for name, lab in (("train", train_labels), ("test", test_labels)):
        if lab.min() < 0 or lab.max() >= num_classes:
            raise ValueError(f"knn.classify: {name} labels must lie in [0, {num_classes}) (-1 = unlabelled?)")


def block_rows(
    train_tokens: Any,
    train_labels: np.ndarray,
    test_tokens: Any,
    test_labels: np.ndarray,
    model: str,
    num_classes: int | None = None,
    ks: Sequence[int] = KS,
    temperature: float = TEMPERATURE,
    query_chunk: int = 1024,
    bank_chunk: int = 65536,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Tidy rows (COLUMNS) of every block: k-NN of the CLS tokens of one model.

    train_tokens: (N, L, D), test_tokens: (M, L, D) (arrays or h5py datasets, e.g. a dump's
    ``tokens/cls``; float16 is read as float32): every block's neighbours come from one pass over the
    bank (:func:`nearest_blocks`, on ``device``), the same as :func:`classify` block by block. Blocks are
    1-indexed in the rows; values are fractions. ``num_classes`` defaults to 1 + the largest label.

    A memory bank of a single class makes every vote right (top-1 = top-5 = 1.0 whatever
    the features): the values are NaN with ``note`` "undefined: 1 class in the memory
    bank", and a log warning. Top-5 with at most 5 classes counts every class, so it is 1.0
    (kept, as DINO reports it; the log says so). Every row has its chance level and counts
    (:func:`with_chance`).
    """
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    present = len(np.unique(train_labels))
    if present < 2:
        note = f"undefined: {present} class in the memory bank"
        log.warning("k-NN of %s: %s; top-1 and top-5 are NaN", model, note)
        rows = [
            {"model": model, "block": block + 1, "metric": metric, "k": k, "value": float("nan"), "note": note}
            for block in range(train_tokens.shape[1])
            for k in ks
            for metric in ("top1", "top5")
        ]
        return [{**r, "chance": float("nan")} for r in with_chance(rows, train_labels, len(test_labels), num_classes)]
    if num_classes <= 5 and max(ks) >= num_classes:
        log.warning("k-NN of %s: %d classes; top-5 counts every class and is 1.0 for k >= %d", model, num_classes,
                    num_classes)
    train_labels = train_labels.astype(np.int64)
    test_labels = test_labels.astype(np.int64)
    _check_labels(train_tokens.shape[0], train_labels, test_tokens.shape[0], test_labels, num_classes)
    sims, idx = nearest_blocks(train_tokens, test_tokens, max(ks), query_chunk, bank_chunk, device)
    rows = []
    for block in range(train_tokens.shape[1]):
        result = accuracy(sims[block], idx[block], train_labels, test_labels, num_classes, ks, temperature)
        rows += [
            {"model": model, "block": block + 1, "metric": metric, "k": k, "value": scores[metric], "note": ""}
            for k, scores in result.items()
            for metric in ("top1", "top5")
        ]
    return with_chance(rows, train_labels, len(test_labels), num_classes)


def check_labels(train: h5py.File, val: h5py.File) -> dict[str, Any]:
    """Labels of a memory-bank dump and a query dump, matched by class name.

    Returns {"train": (N,), "val": (M,), "num_classes": C}: the bank's labels, the queries'
    labels in the bank's numbering (so a query set with fewer classes still matches), and C
    = 1 + the bank's largest label. A query class absent from the bank, or an unlabelled
    image, is a :class:`DumpError`.
    """
    out: dict[str, Any] = {}
    names = {}
    for role, handle in (("train", train), ("val", val)):
        labels = require(handle, "images/label")[...]
        classes = require(handle, "images/class").asstr()[...]
        if labels.size == 0 or np.any(labels < 0):
            raise DumpError(f"k-NN needs a class label for every image; dump '{handle.filename}' has unlabelled images")
        names[role] = (labels, classes)
    bank = dict(zip(names["train"][1], names["train"][0], strict=True))
    missing = sorted(set(names["val"][1]) - set(bank))
    if missing:
        raise DumpError(
            f"k-NN: the classes {', '.join(missing[:5])} of '{val.filename}' are not in the memory bank "
            f"'{train.filename}'"
        )
    out["train"] = names["train"][0].astype(np.int64)
    out["val"] = np.array([bank[c] for c in names["val"][1]], dtype=np.int64)
    out["num_classes"] = int(out["train"].max()) + 1
    return out
