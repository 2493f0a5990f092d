"""Revisited Oxford / Paris retrieval (docs/protocols.md#downstream-tasks; Radenovic et al. 2018).

A query's database ranking is scored against its ground truth: the junk images
are removed from the ranking, then AP interpolates precision between ranks
(precision0 = j / r, or 1 at r = 0; precision1 = (j + 1) / (r + 1) for the
j-th positive at rank r, both 0-based after junk removal). The protocols
choose which images count as positives and which as junk:

| protocol | ok | junk |
|---|---|---|
| easy | easy | junk + hard |
| medium | easy + hard | junk |
| hard | hard | junk + easy |

mP@k follows the official code: with the positives' 1-based ranks after junk
removal, precision at min(k, rank of the last positive). Queries without a
positive are excluded from every mean. The ranking sorts similarities
descending with ties in database order (the reference's sort leaves ties
unspecified). The similarities are :func:`vitscope.cosine.cosine64` (float64,
summed in a fixed order), not a float32 product, whose sums the BLAS kernel
orders: with it, identical database images could get similarities a few ulp
apart, and their order (so AP) would depend on the CPU and on their positions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from .. import cosine
from ..errors import DumpError
from ..io.dumps import require

log = logging.getLogger(__name__)

PROTOCOLS = ("easy", "medium", "hard")
KAPPAS = (1, 5, 10)
COLUMNS = ("model", "block", "metric", "protocol", "queries", "value", "note", "evaluated", "database")


def protocol_sets(query: Mapping[str, Sequence[int]], protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """(ok, junk) database indices of one query's ground truth (``easy``, ``hard``, ``junk``) under a protocol."""
    easy, hard, junk = (np.asarray(query.get(key, []), dtype=np.int64) for key in ("easy", "hard", "junk"))
    if protocol == "easy":
        return easy, np.concatenate([junk, hard])
    if protocol == "medium":
        return np.concatenate([easy, hard]), junk
    if protocol == "hard":
        return hard, np.concatenate([junk, easy])
    raise ValueError(f"protocol = {protocol!r}; expected one of {', '.join(PROTOCOLS)}")


def ranking(similarity: np.ndarray) -> np.ndarray:
    """(Q, N) query-by-database similarities -> (Q, N) database indices, best first, ties in database order."""
    return np.argsort(-np.asarray(similarity), axis=1, kind="stable")


def positive_ranks(ranks: np.ndarray, positives: np.ndarray, junk: np.ndarray) -> np.ndarray:
    """0-based ranks of the positives in one query's ranking (N,) once the junk images are removed."""
    ranks = np.asarray(ranks)
    keep = ~np.isin(ranks, junk)
    is_pos = np.isin(ranks, positives) & keep
    # position after junk removal = number of kept images before it
    return (np.cumsum(keep) - 1)[is_pos]


def average_precision(ranks: np.ndarray, positives: np.ndarray, junk: np.ndarray) -> float:
    """AP of one query: ``ranks`` (N,) database indices best first; ``positives``, ``junk``: indices.

    The number of positives is len(positives) (a positive absent from ``ranks`` counts as
    never retrieved); NaN when there is none.
    """
    n = len(np.unique(np.asarray(positives)))
    if n == 0:
        return float("nan")
    pos = positive_ranks(ranks, positives, junk).astype(np.float64)
    j = np.arange(len(pos), dtype=np.float64)
    precision0 = np.where(pos == 0, 1.0, j / np.maximum(pos, 1))
    precision1 = (j + 1) / (pos + 1)
    return float(((precision0 + precision1) / (2 * n)).sum())


def precision_at(
    ranks: np.ndarray, positives: np.ndarray, junk: np.ndarray, kappas: Sequence[int] = KAPPAS
) -> np.ndarray:
    """Official mP@k of one query: (len(kappas),), NaN without positives.

    With p the 1-based ranks of the retrieved positives after junk removal and
    kq = min(k, max(p)): precision = #(p <= kq) / kq.
    """
    if len(positives) == 0:
        return np.full(len(kappas), np.nan)
    pos = positive_ranks(ranks, positives, junk) + 1
    last = pos.max() if len(pos) else 1
    return np.array([(pos <= min(k, last)).sum() / min(k, last) for k in kappas], dtype=np.float64)


def evaluate(
    similarity: np.ndarray, gnd: Sequence[Mapping[str, Sequence[int]]], protocol: str, kappas: Sequence[int] = KAPPAS
) -> dict[str, float]:
    """mAP and mP@k of one protocol: {"mAP": ..., "mP@1": ..., ...} (fractions).

    similarity: (Q, N) query-by-database; gnd: per query ``easy``, ``hard``, ``junk``.
    Queries with no positive under the protocol are left out of the means (``queries`` in
    the result counts those kept).
    """
    similarity = np.asarray(similarity)
    if similarity.shape[0] != len(gnd):
        raise ValueError(f"retrieval.evaluate: {similarity.shape[0]} queries in the similarity, {len(gnd)} in gnd")
    ranks = ranking(similarity)
    aps, prs = [], []
    for i, query in enumerate(gnd):
        ok, junk = protocol_sets(query, protocol)
        if len(ok) == 0:
            continue
        aps.append(average_precision(ranks[i], ok, junk))
        prs.append(precision_at(ranks[i], ok, junk, kappas))
    if not aps:
        return {"mAP": float("nan"), **{f"mP@{k}": float("nan") for k in kappas}, "queries": 0}
    mean_pr = np.mean(prs, axis=0)
    return {"mAP": float(np.mean(aps)), **{f"mP@{k}": float(v) for k, v in zip(kappas, mean_pr, strict=True)},
            "queries": len(aps)}


def mean_average_precision(similarity: np.ndarray, gnd: Sequence[Mapping[str, Sequence[int]]], protocol: str) -> float:
    """mAP of one protocol (see :func:`evaluate`)."""
    return evaluate(similarity, gnd, protocol)["mAP"]


def similarity(query_tokens: np.ndarray, database_tokens: np.ndarray, block: int = 64) -> np.ndarray:
    """(Q, N) float64 cosine similarities of (Q, D) query and (N, D) database descriptors.

    :func:`vitscope.cosine.cosine64`: each entry's bits depend on its two rows alone (identical
    database images tie exactly, on any CPU). ``block`` queries at a time.
    """
    q, db = np.asarray(query_tokens), np.asarray(database_tokens)
    db_norms = cosine.norms64(db)
    q_norms = cosine.norms64(q)
    out = np.empty((q.shape[0], db.shape[0]), dtype=np.float64)
    for start in range(0, q.shape[0], block):
        stop = start + block
        out[start:stop] = cosine.cosine64(q[start:stop, None, :], db[None], q_norms[start:stop, None], db_norms[None])
    return out


def block_rows(
    database_tokens: Any,
    query_tokens: Any,
    gnd: Sequence[Mapping[str, Sequence[int]]],
    model: str,
    queries: str,
    protocols: Sequence[str] = PROTOCOLS,
    kappas: Sequence[int] = KAPPAS,
) -> list[dict[str, Any]]:
    """Tidy rows (COLUMNS) of every block: retrieval with the cosine of the CLS tokens (:func:`similarity`).

    database_tokens: (N, L, D), query_tokens: (Q, L, D) (arrays or h5py datasets);
    ``queries`` records how the queries were read ("cropped" or "full"), ``evaluated`` how many
    queries have a positive under the protocol (the ones averaged), ``database`` the database
    size N. Blocks 1-indexed.
    A protocol under which no query has a positive (every query left out, see
    :func:`evaluate`) gives NaN values with ``note`` saying so, and a log warning.
    """
    rows = []
    warned: set[str] = set()
    for block in range(database_tokens.shape[1]):
        sim = similarity(np.asarray(query_tokens[:, block]), np.asarray(database_tokens[:, block]))
        for protocol in protocols:
            result = evaluate(sim, gnd, protocol, kappas)
            note = "" if result["queries"] else f"undefined: no query has a positive under protocol {protocol}"
            if note and protocol not in warned:
                warned.add(protocol)
                log.warning("retrieval of %s: %s; mAP and mP@k are NaN", model, note)
            rows += [
                {"model": model, "block": block + 1, "metric": metric, "protocol": protocol, "queries": queries,
                 "value": result[metric], "note": note, "evaluated": int(result["queries"]),
                 "database": int(database_tokens.shape[0])}
                for metric in ("mAP", *(f"mP@{k}" for k in kappas))
            ]
    return rows


def check_dump(dump: h5py.File, gnd: Mapping[str, Any]) -> int:
    """Check that a dump covers the database then the queries of ``gnd``; return the database size.

    The index of a revisited dataset lists imlist then qimlist (vitscope.io.datasets.index_revisited);
    the dump's image paths must end with those stems (``<stem>.jpg``).
    """
    paths = require(dump, "images/path").asstr()[...]
    stems = list(gnd["imlist"]) + list(gnd["qimlist"])
    if len(paths) != len(stems) or any(
        not str(p).endswith(f"/{s}.jpg") for p, s in zip(paths, stems, strict=True)
    ):
        raise DumpError(
            f"dump '{dump.filename}' does not hold the {len(gnd['imlist'])} database then {len(gnd['qimlist'])} "
            f"query images of the ground truth (found {len(paths)} images); re-index and re-extract"
        )
    return len(gnd["imlist"])
