"""Shared helpers of the figures: the Agg backend, the palette, :func:`save` and
:func:`table_grid`.

:func:`save` writes a figure to PDF and PNG atomically, without timestamps, so
reruns give identical files. Every figure module (:mod:`vitscope.plots.attention`,
:mod:`~vitscope.plots.heads`, :mod:`~vitscope.plots.features`, :mod:`~vitscope.plots.tasks`,
:mod:`~vitscope.plots.training`) imports its palette and ``plt`` from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..io.dumps import atomic_path  # noqa: E402

PALETTE = plt.get_cmap("tab10").colors

Rows = Sequence[Mapping[str, str]]


def save(fig: Figure, paths: Sequence[str | Path], dpi: int = 150) -> None:
    """Write ``fig`` to each path (format from the suffix) and close it."""
    for path in paths:
        suffix = Path(path).suffix.lstrip(".")
        metadata = {"CreationDate": None} if suffix == "pdf" else {"Software": None}
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            fig.savefig(handle, format=suffix, dpi=dpi, metadata=metadata, bbox_inches="tight")
    plt.close(fig)


def table_grid(rows: Rows, column: str) -> np.ndarray:
    """Table rows (block, head 1-indexed) -> (L, H) array of ``column``."""
    blocks = max(int(r["block"]) for r in rows)
    heads = max(int(r["head"]) for r in rows)
    out = np.full((blocks, heads), np.nan)
    for r in rows:
        out[int(r["block"]) - 1, int(r["head"]) - 1] = float(r[column])
    return out
