"""Single-image attention grids (docs/protocols.md#attention-analyses): the maps of a few queries
of every block and head of the exemplar images stored in a dump.

Notation: E exemplar images, L blocks, H heads, P prefix tokens (CLS first),
grid gh x gw, G = gh * gw, T = P + G, Q queries (CLS and five spatial tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Grid = tuple[int, int]

#: query names in figure column order
QUERIES = ("cls", "center", "top", "left", "right", "bottom")


def query_tokens(grid: Grid) -> dict[str, tuple[int, int]]:
    """(row, col) of the five spatial queries on a gh x gw grid.

    center = ((gh - 1) // 2, (gw - 1) // 2), the upper-left of the four middle
    tokens on an even grid (the study's choice: (6, 6) on 14 x 14); top,
    bottom, left and right are the edge tokens in the center's column or row.
    """
    gh, gw = grid
    if gh < 1 or gw < 1:
        raise ValueError(f"grid {grid} must be at least 1 x 1")
    r, c = (gh - 1) // 2, (gw - 1) // 2
    return {"center": (r, c), "top": (0, c), "left": (r, 0), "right": (r, gw - 1), "bottom": (gh - 1, c)}


def query_rows(grid: Grid, prefix: int = 1) -> list[int]:
    """Token indices (into T) of :data:`QUERIES`: CLS is 0, spatial (r, c) is P + r * gw + c."""
    spatial = query_tokens(grid)
    return [0] + [prefix + r * grid[1] + c for r, c in (spatial[q] for q in QUERIES[1:])]


def query_maps(attn: np.ndarray, grid: Grid, prefix: int = 1) -> np.ndarray:
    """Attention maps of the :data:`QUERIES` over the spatial keys.

    attn: (..., T, T) post-softmax attention of one image (e.g. (L, H, T, T)).
    Returns (..., Q, gh, gw) float32: each query's row over the G spatial keys,
    renormalised to sum 1 (the prefix keys' share removed). A zero-mass row (spatial
    mass below float32's smallest normal number, docs/attention.md) has no spatial
    distribution: its map is all zeros, never NaN.
    """
    rows = np.asarray(attn, dtype=np.float64)[..., query_rows(grid, prefix), prefix:]
    mass = rows.sum(axis=-1, keepdims=True)
    ok = mass >= np.finfo(np.float32).tiny
    rows = np.where(ok, rows / np.where(ok, mass, 1.0), 0.0)
    return rows.reshape(*rows.shape[:-1], *grid).astype(np.float32)


def head_groups(heads: int, per_figure: int) -> list[tuple[int, int]]:
    """Split heads 0..H-1 into consecutive [start, stop) groups of at most ``per_figure``."""
    if per_figure < 1:
        raise ValueError(f"per_figure = {per_figure} must be >= 1")
    return [(s, min(s + per_figure, heads)) for s in range(0, heads, per_figure)]


def figure_stem(position: int, group: tuple[int, int], groups: Sequence[tuple[int, int]]) -> str:
    """File name stem: ``{position}`` when one figure holds every head, else
    ``{position}_heads{first}-{last}`` (1-indexed, inclusive)."""
    if len(groups) == 1:
        return f"{position}"
    return f"{position}_heads{group[0] + 1}-{group[1]}"


def display_image(path: str, image_size: tuple[int, int], interpolation: str = "bicubic") -> np.ndarray:
    """(h, w, 3) uint8: the image as the model saw it (resize, center crop), before normalisation."""
    from ..io.datasets import load_image
    from ..io.preprocess import preprocess

    tensor = preprocess(image_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), interpolation)(load_image(path))
    return (tensor.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def dump_exemplars(dump) -> dict[str, np.ndarray]:
    """Small arrays for the attention grid figures, from an open dump.

    Returns ``position`` (E,), ``image_path`` (E,) str, ``image`` (E, h, w, 3) uint8
    (preprocessed, unnormalised), ``maps`` (E, L, H, Q, gh, gw) float32
    (:func:`query_maps`), ``queries`` (Q,) names, ``cells`` (Q, 2) (row, col)
    of each query, (-1, -1) for CLS.
    """
    from ..io.dumps import geometry, require

    geom = geometry(dump)
    positions = require(dump, "exemplars/position")[...]
    attn = require(dump, "exemplars/attention")
    paths = dump["images/path"].asstr()[...]
    image_size = tuple(int(v) for v in dump.attrs["image_size"])
    interpolation = str(dump.attrs.get("interpolation", "bicubic"))
    spatial = query_tokens(geom["grid"])
    return {
        "position": positions.astype(np.int64),
        "image_path": np.array([paths[p] for p in positions], dtype=str),
        "image": np.stack([display_image(paths[p], image_size, interpolation) for p in positions])
        if len(positions) else np.zeros((0, *image_size, 3), np.uint8),
        "maps": np.stack([query_maps(attn[e], geom["grid"], geom["prefix"]) for e in range(len(positions))])
        if len(positions) else np.zeros((0,), np.float32),
        "queries": np.array(QUERIES, dtype=str),
        "cells": np.array([(-1, -1)] + [spatial[q] for q in QUERIES[1:]], dtype=np.int64),
    }
