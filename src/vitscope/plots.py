"""Figures: functions take arrays and tables and return matplotlib figures.

:func:`save` writes a figure to PDF and PNG atomically, without timestamps, so
reruns give identical files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .dumps import atomic_path  # noqa: E402

PALETTE = plt.get_cmap("tab10").colors


def save(fig: Figure, paths: Sequence[str | Path], dpi: int = 150) -> None:
    """Write ``fig`` to each path (format from the suffix) and close it."""
    for path in paths:
        suffix = Path(path).suffix.lstrip(".")
        metadata = {"CreationDate": None} if suffix == "pdf" else {"Software": None}
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            fig.savefig(handle, format=suffix, dpi=dpi, metadata=metadata, bbox_inches="tight")
    plt.close(fig)


def map_grid(
    maps: np.ndarray,
    title: str,
    cmap: str = "inferno",
    row_label: str = "block",
    col_label: str = "head",
) -> Figure:
    """(R, C, h, w) maps as an R x C grid of panels, each on its own colour scale.

    Rows and columns are labelled 1-indexed (``block 1``, ``head 1``).
    """
    rows, cols = maps.shape[:2]
    aspect = maps.shape[3] / maps.shape[2]
    size = 1.1
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.2 + cols * size * aspect, 0.8 + rows * size), squeeze=False,
        layout="constrained",
    )
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.0, hspace=0.0)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(maps[r, c], cmap=cmap, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{row_label} {r + 1}", fontsize=8)
            if r == 0:
                ax.set_title(f"{col_label} {c + 1}", fontsize=8)
    fig.suptitle(title + "\n(each panel on its own colour scale)", fontsize=9)
    return fig


def distance_by_block(
    tables: Mapping[str, Sequence[Mapping[str, str]]],
    units: str = "pixels",
    title: str = "",
) -> Figure:
    """Attention distance against block for every model: mean over heads (line)
    with every head as a dot (the spread over heads).

    ``tables``: model -> rows of a distance table (block, head, distance_px, distance_grid).
    """
    column = "distance_px" if units == "pixels" else "distance_grid"
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (model, rows) in enumerate(tables.items()):
        colour = PALETTE[i % len(PALETTE)]
        blocks = np.array([int(r["block"]) for r in rows])
        values = np.array([float(r[column]) for r in rows])
        order = np.unique(blocks)
        means = [values[blocks == b].mean() for b in order]
        jitter = (i - (len(tables) - 1) / 2) * 0.08
        ax.scatter(blocks + jitter, values, s=9, color=colour, alpha=0.35, linewidths=0)
        ax.plot(order, means, marker="o", ms=4, color=colour, label=model)
    ax.set_xlabel("block")
    ax.set_ylabel("mean attention distance " + ("(pixels)" if units == "pixels" else "(fraction of grid, [0, 1])"))
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    factor = _pixels_per_grid_unit(tables)
    if factor:  # every model shares one conversion: label the other unit too
        to_other = (lambda v: v / factor, lambda v: v * factor) if units == "pixels" else (
            lambda v: v * factor, lambda v: v / factor)
        other = ax.secondary_yaxis("right", functions=to_other)
        other.set_ylabel("fraction of grid" if units == "pixels" else "pixels")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def _pixels_per_grid_unit(tables: Mapping[str, Sequence[Mapping[str, str]]]) -> float | None:
    """The pixels-per-grid-unit factor if all models share it (same grid and patch), else None."""
    factors = {
        round(float(r["distance_px"]) / float(r["distance_grid"]), 6)
        for rows in tables.values()
        for r in rows
        if float(r["distance_grid"]) > 0
    }
    return factors.pop() if len(factors) == 1 else None


def distance_heads(
    tables: Mapping[str, Sequence[Mapping[str, str]]],
    units: str = "pixels",
    title: str = "",
) -> Figure:
    """Per-head breakout: one panel per model, attention distance of each head against block."""
    column = "distance_px" if units == "pixels" else "distance_grid"
    n = len(tables)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.2), squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, (model, rows) in zip(axes[0], tables.items(), strict=True):
        heads = sorted({int(r["head"]) for r in rows})
        for h in heads:
            sel = [r for r in rows if int(r["head"]) == h]
            ax.plot(
                [int(r["block"]) for r in sel], [float(r[column]) for r in sel],
                marker=".", lw=0.8, color=cmap(h / max(len(heads), 2)), label=f"head {h}",
            )
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("block")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("attention distance " + ("(pixels)" if units == "pixels" else "(grid fraction)"))
    if len(heads) <= 16:
        axes[0, -1].legend(fontsize=6, frameon=False, ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
