"""What the models represent (docs/protocols.md#feature-analyses): CKA.

- :func:`linear_cka`: feature-space linear CKA (Kornblith et al. 2019), biased or
  debiased, on two feature matrices of the same n images.
- :func:`hsic1` and :func:`minibatch_cka`: the unbiased minibatch HSIC of Nguyen
  et al. 2021 (eq. 3) on the per-minibatch Gram matrices a dump stores
  (``cka/blocks/*``, ``cka/norms/*``), vectorised over many layer pairs.

Functions here take arrays and return arrays or table rows; the only readers of
dumps are :func:`read_grams` and :func:`pair_cka`, which check that two dumps
share the CKA minibatch partition.

A value that is undefined for its input is NaN in the rows, with the reason in the
row's ``note`` column (``undefined: ...``; empty for a defined value) and a warning in
the log: CKA at a point with constant features (docs/features.md). Clustering scores
are in :mod:`vitscope.features.clustering`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from ..errors import DumpError
from ..io.dumps import REPRESENTATIONS, require

log = logging.getLogger(__name__)
CKA_COLUMNS = ("model_a", "model_b", "points", "point_a", "point_b", "representation", "cka", "note")
#: the ``note`` of a CKA value at a point whose features are constant (see :func:`minibatch_cka`)
CONSTANT_NOTE = "undefined: constant features"


def _debiased_dot(xty: float, rows_x: np.ndarray, rows_y: np.ndarray, norm_x: float, norm_y: float, n: int) -> float:
    """n (n - 3) HSIC1 of centred features from feature-space sums (Kornblith et al.'s helper)."""
    return xty - n / (n - 2.0) * float(rows_x @ rows_y) + norm_x * norm_y / ((n - 1) * (n - 2))


def linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """Feature-space linear CKA of two representations of the same n examples.

    x: (n, d1), y: (n, d2). Features are centred, then
    CKA = ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F) (biased, Kornblith et al. 2019), or the
    same ratio with each HSIC replaced by the unbiased estimator of Song et al. 2012
    (``debiased=True``, n > 3), which equals :func:`hsic1` on the linear Gram matrices.
    Computed in float64.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka: need (n, d1) and (n, d2), got {x.shape} and {y.shape}")
    x = x - x.mean(axis=0, keepdims=True)
    y = y - y.mean(axis=0, keepdims=True)
    xy = np.linalg.norm(y.T @ x) ** 2
    xx = np.linalg.norm(x.T @ x) ** 2
    yy = np.linalg.norm(y.T @ y) ** 2
    if debiased:
        n = x.shape[0]
        if n < 4:
            raise ValueError(f"linear_cka: the debiased estimator needs n > 3 examples, got {n}")
        rows_x, rows_y = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
        norm_x, norm_y = float(rows_x.sum()), float(rows_y.sum())
        xy = _debiased_dot(xy, rows_x, rows_y, norm_x, norm_y, n)
        xx = _debiased_dot(xx, rows_x, rows_x, norm_x, norm_x, n)
        yy = _debiased_dot(yy, rows_y, rows_y, norm_y, norm_y, n)
    return float(xy / np.sqrt(xx * yy))


def _zero_diagonal(k: np.ndarray) -> np.ndarray:
    """(..., n, n) -> float64 copy with the diagonal set to zero."""
    k = np.array(k, dtype=np.float64, copy=True)
    n = k.shape[-1]
    k[..., np.arange(n), np.arange(n)] = 0.0
    return k


def hsic1(k: np.ndarray, l: np.ndarray) -> np.ndarray:  # noqa: E741
    """Unbiased HSIC of Nguyen et al. 2021 (eq. 3), as docs/protocols.md#feature-analyses writes it.

    k, l: (..., n, n) Gram matrices (broadcastable), n = batch size > 3. With K~, L~ the
    Gram matrices with zeroed diagonals:
    HSIC1 = [tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)).
    Returns (...) in float64.
    """
    kt, lt = _zero_diagonal(k), _zero_diagonal(l)
    n = kt.shape[-1]
    if n < 4 or lt.shape[-1] != n:
        raise ValueError(f"hsic1: need n x n Gram matrices with n > 3, got {kt.shape} and {lt.shape}")
    trace = np.einsum("...ij,...ji->...", kt, lt)
    rows_k, rows_l = kt.sum(axis=-1), lt.sum(axis=-1)
    sums = rows_k.sum(axis=-1) * rows_l.sum(axis=-1)
    cross = np.einsum("...i,...i->...", rows_k, rows_l)
    return (trace + sums / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


class _Grams:
    """Zero-diagonal Grams (M, P, b, b) flattened to (M, P, b*b), their row sums and totals."""

    def __init__(self, grams: np.ndarray):
        kt = _zero_diagonal(grams)
        self.m, self.p, self.n = kt.shape[0], kt.shape[1], kt.shape[-1]
        self.flat = kt.reshape(self.m, self.p, self.n * self.n)
        self.rows = kt.sum(axis=-1)  # (M, P, b)
        self.total = self.rows.sum(axis=-1)  # (M, P)

    def hsic(self, other: _Grams) -> np.ndarray:
        """(M, P, Q) HSIC1 of every pair of points, every minibatch (tr(K~L~) = sum K~ * L~, symmetric)."""
        n = self.n
        trace = self.flat @ other.flat.transpose(0, 2, 1)
        sums = self.total[:, :, None] * other.total[:, None, :]
        cross = self.rows @ other.rows.transpose(0, 2, 1)
        return (trace + sums / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))

    def self_hsic(self) -> tuple[np.ndarray, np.ndarray]:
        """(M, P) HSIC1(K_p, K_p), and (M, P) tr(K~K~) / (n(n-3)), its scale before cancellation."""
        n = self.n
        trace = np.einsum("mpi,mpi->mp", self.flat, self.flat)
        cross = np.einsum("mpi,mpi->mp", self.rows, self.rows)
        value = (trace + self.total**2 / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))
        return value, trace / (n * (n - 3))


#: a point whose mean self-HSIC is below this fraction of mean tr(K~K~) / (n(n-3)) has
#: (numerically) constant features, e.g. the CLS token before the first attention
DEGENERATE = 1e-12


def _norm(grams: _Grams) -> np.ndarray:
    """(P,) mean self-HSIC over minibatches, NaN where the features are constant."""
    value, scale = grams.self_hsic()
    value, scale = value.mean(axis=0), scale.mean(axis=0)
    return np.where(value > DEGENERATE * scale, value, np.nan)


def minibatch_cka(grams_a: np.ndarray, grams_b: np.ndarray) -> np.ndarray:
    """Minibatch linear CKA (Nguyen et al. 2021) of every point of A against every point of B.

    grams_a: (M, P, b, b) or (M, b, b); grams_b: (M, Q, b, b) or (M, b, b): Gram
    matrices X X^T of the same M minibatches of b images (b > 3), P and Q points
    (blocks or LayerNorm outputs). Returns (P, Q) (a scalar array for two 3-D inputs):
    CKA = mean_m HSIC1(K_m, L_m) / sqrt(mean_m HSIC1(K_m, K_m) * mean_m HSIC1(L_m, L_m)).
    float64; no rescaling of the Gram matrices (docs/differences.md). A point whose
    features are constant over the images (mean self-HSIC at most DEGENERATE times
    its scale, e.g. the CLS token at block 1's norm1) gives NaN: CKA is undefined there.
    """
    squeeze = grams_a.ndim == 3 and grams_b.ndim == 3
    a = grams_a[:, None] if grams_a.ndim == 3 else grams_a
    b = grams_b[:, None] if grams_b.ndim == 3 else grams_b
    if a.ndim != 4 or b.ndim != 4 or a.shape[0] != b.shape[0] or a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"minibatch_cka: need (M, P, b, b) and (M, Q, b, b), got {grams_a.shape} and {grams_b.shape}")
    if a.shape[-1] < 4 or a.shape[0] == 0:
        raise ValueError(f"minibatch_cka: need at least one minibatch of b > 3 images, got {a.shape}")
    ga, gb = _Grams(a), _Grams(b)
    out = ga.hsic(gb).mean(axis=0) / np.sqrt(_norm(ga)[:, None] * _norm(gb)[None, :])
    return out[0, 0] if squeeze else out


def point_labels(points: int, kind: str) -> list[str]:
    """1-indexed labels of the CKA points: ``blocks`` -> "1", "2", ...; ``norms`` ->
    "1.n1", "1.n2", "2.n1", ... (block 1 norm1, block 1 norm2, ...)."""
    if kind == "blocks":
        return [str(i + 1) for i in range(points)]
    if kind == "norms":
        return [f"{i // 2 + 1}.n{i % 2 + 1}" for i in range(points)]
    raise ValueError(f"point_labels: kind must be 'blocks' or 'norms', got {kind!r}")


def read_grams(dump: h5py.File, kind: str, representation: str) -> np.ndarray:
    """(M, P, b, b) float64 Gram matrices ``cka/{kind}/{representation}`` of a dump."""
    return np.asarray(require(dump, f"cka/{kind}/{representation}")[...], dtype=np.float64)


def check_same_partition(dump_a: h5py.File, dump_b: h5py.File) -> None:
    """Raise :class:`DumpError` unless both dumps hold the same images and CKA minibatches."""
    names = f"'{dump_a.filename}' and '{dump_b.filename}'"
    paths_a, paths_b = require(dump_a, "images/path")[...], require(dump_b, "images/path")[...]
    if paths_a.shape != paths_b.shape or not np.array_equal(paths_a, paths_b):
        raise DumpError(f"dumps {names} hold different image lists; CKA compares the same images")
    index_a, index_b = require(dump_a, "cka/index")[...], require(dump_b, "cka/index")[...]
    if index_a.shape != index_b.shape or not np.array_equal(index_a, index_b):
        raise DumpError(
            f"dumps {names} have different CKA minibatch partitions (cka/index {index_a.shape} vs "
            f"{index_b.shape}); extract both with the same extract.cka_batch_size and extract.order_seed"
        )
    if index_a.size == 0:
        raise DumpError(f"dumps {names} hold no CKA minibatch (fewer images than extract.cka_batch_size)")


def pair_cka(dump_a: h5py.File, dump_b: h5py.File) -> dict[str, np.ndarray]:
    """CKA of every point of model A against every point of model B, from two dumps.

    Returns ``{kind}_{rep}`` arrays for kind in (blocks, norms) and rep in
    (cls, spatial, all): blocks (L_A, L_B) at the block outputs, norms (2L_A, 2L_B) at
    the LayerNorm outputs; plus ``images`` (images in minibatches) and ``batch`` (b).
    """
    check_same_partition(dump_a, dump_b)
    index = dump_a["cka/index"][...]
    out: dict[str, np.ndarray] = {"images": np.int64(index.size), "batch": np.int64(index.shape[1])}
    for kind in ("blocks", "norms"):
        for rep in REPRESENTATIONS:
            a = read_grams(dump_a, kind, rep)
            b = a if dump_a.filename == dump_b.filename else read_grams(dump_b, kind, rep)
            out[f"{kind}_{rep}"] = minibatch_cka(a, b)
    return out


def cka_rows(arrays: Mapping[str, np.ndarray], model_a: str, model_b: str, kind: str) -> list[dict[str, Any]]:
    """Tidy rows (CKA_COLUMNS) of one kind (blocks or norms) of a :func:`pair_cka` result."""
    rows = []
    for rep in REPRESENTATIONS:
        values = arrays[f"{kind}_{rep}"]
        labels_a, labels_b = point_labels(values.shape[0], kind), point_labels(values.shape[1], kind)
        for i, point_a in enumerate(labels_a):
            for j, point_b in enumerate(labels_b):
                value = float(values[i, j])
                rows.append(
                    {"model_a": model_a, "model_b": model_b, "points": kind, "point_a": point_a,
                     "point_b": point_b, "representation": rep, "cka": value, "note": _cka_note(value)}
                )
    _warn_undefined(rows, "cka", f"CKA {model_a} vs {model_b} ({kind})")
    return rows


def _cka_note(value: float) -> str:
    """The ``note`` of one CKA value: NaN only arises at a point with constant features."""
    return CONSTANT_NOTE if np.isnan(value) else ""


def _warn_undefined(rows: Sequence[Mapping[str, Any]], column: str, what: str) -> None:
    """One log warning per distinct ``note`` of the rows whose ``column`` is NaN."""
    notes: dict[str, int] = {}
    for row in rows:
        if np.isnan(float(row[column])):
            notes[str(row.get("note") or "undefined")] = notes.get(str(row.get("note") or "undefined"), 0) + 1
    for note, count in notes.items():
        log.warning("%s: %d of %d values are NaN (%s)", what, count, len(rows), note)


def last_layer_matrix(pairs: Mapping[tuple[str, str], Mapping[str, np.ndarray]], models: Sequence[str]) -> np.ndarray:
    """(3, K, K) last-block CKA of every model pair for cls / spatial / all (symmetric).

    ``pairs``: (model_a, model_b) -> :func:`pair_cka` arrays, one of each unordered pair.
    """
    out = np.full((len(REPRESENTATIONS), len(models), len(models)), np.nan)
    position = {m: i for i, m in enumerate(models)}
    for (a, b), arrays in pairs.items():
        for r, rep in enumerate(REPRESENTATIONS):
            value = arrays[f"blocks_{rep}"][-1, -1]
            out[r, position[a], position[b]] = out[r, position[b], position[a]] = value
    return out


def last_layer_rows(pairs: Mapping[tuple[str, str], Mapping[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Tidy rows (CKA_COLUMNS) of the last-block CKA of every pair and representation."""
    rows = []
    for (a, b), arrays in pairs.items():
        for rep in REPRESENTATIONS:
            values = arrays[f"blocks_{rep}"]
            value = float(values[-1, -1])
            rows.append(
                {"model_a": a, "model_b": b, "points": "blocks", "point_a": str(values.shape[0]),
                 "point_b": str(values.shape[1]), "representation": rep, "cka": value, "note": _cka_note(value)}
            )
    _warn_undefined(rows, "cka", "last-block CKA")
    return rows
