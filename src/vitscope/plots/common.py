"""Shared helpers of the figures: the Agg backend, the palette, :func:`save`,
:func:`text_problems` and :func:`table_grid`.

:func:`save` writes a figure to PDF and PNG atomically, without timestamps, so
reruns give identical files. Before writing, it checks the figure's text with
:func:`text_problems` (no text under :data:`MIN_FONT_PT` at the saved size, no two
texts overlapping), logs every problem as a warning and records the verdict in the
PNG's ``vitscope:text`` entry (``ok`` or the problems), which the tests read for
every figure of a whole-workflow run. Every figure module (:mod:`vitscope.plots.attention`,
:mod:`~vitscope.plots.heads`, :mod:`~vitscope.plots.features`, :mod:`~vitscope.plots.tasks`,
:mod:`~vitscope.plots.training`) imports its palette and ``plt`` from here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from ..io.dumps import atomic_path  # noqa: E402

PALETTE = plt.get_cmap("tab10").colors

#: the smallest font a figure may use, in points at its saved size (bbox "tight" crops, never scales)
MIN_FONT_PT = 7.0
#: two texts overlap when their boxes interpenetrate by more than this, in points
OVERLAP_PT = 1.0
#: the PNG text entry holding :func:`save`'s verdict
TEXT_CHECK_KEY = "vitscope:text"

_log = logging.getLogger(__name__)

Rows = Sequence[Mapping[str, str]]


@contextlib.contextmanager
def _recording_texts() -> Iterator[list[tuple[int, Text, np.ndarray]]]:
    """(renderer id, text, corners in points) of every :class:`~matplotlib.text.Text` that draws
    something while the context is open (visible and non-empty: tick labels of hidden axes and
    blank labels are left out), measured by the renderer that drew it."""
    drawn: list[tuple[int, Text, np.ndarray]] = []
    original = Text.draw

    def draw(self: Text, renderer) -> None:  # type: ignore[no-untyped-def]
        original(self, renderer)
        if renderer is not None and self.get_visible() and self.get_text().strip() and self.get_alpha() != 0:
            drawn.append((id(renderer), self, _text_corners(self, renderer)))

    Text.draw = draw  # type: ignore[method-assign]
    try:
        yield drawn
    finally:
        Text.draw = original  # type: ignore[method-assign]


def _text_corners(text: Text, renderer) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The (4, 2) corners, in points, of the rotated box ``text`` occupies (its window extent is the
    axis-aligned box around it, which for rotated labels is much larger than the glyphs)."""
    scale = 1.0 / renderer.points_to_pixels(1.0)
    extent = text.get_window_extent(renderer)
    centre = np.array([(extent.x0 + extent.x1) / 2, (extent.y0 + extent.y1) / 2]) * scale
    angle = math.radians(text.get_rotation())
    if math.sin(angle) * math.cos(angle) == 0:  # horizontal or vertical: the extent is the box
        return np.array([[extent.x0, extent.y0], [extent.x1, extent.y0], [extent.x1, extent.y1],
                         [extent.x0, extent.y1]]) * scale
    # the unrotated box: the text's layout with the rotation set to 0 for the moment
    rotation, stale = text.get_rotation(), text.stale
    try:
        text.set_rotation(0)
        box = text._get_layout(renderer)[0]  # private; fall back to the extent below
        width, height = box.width * scale, box.height * scale
    except Exception:  # pragma: no cover - a matplotlib without _get_layout
        width, height = extent.width * scale, extent.height * scale
        angle = 0.0
    finally:
        text.set_rotation(rotation)
        text.stale = stale
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [width / 2, height / 2]
    return centre + half @ rot.T


def _penetration(a: np.ndarray, b: np.ndarray) -> float:
    """How deep two convex quadrilaterals (corners (4, 2)) interpenetrate: the smallest overlap
    of their projections over both shapes' edge normals (separating axes); <= 0 when apart."""
    depth = math.inf
    for shape in (a, b):
        for i in range(4):
            edge = shape[(i + 1) % 4] - shape[i]
            norm = math.hypot(*edge)
            if norm == 0:
                continue
            axis = np.array([-edge[1], edge[0]]) / norm
            pa, pb = a @ axis, b @ axis
            depth = min(depth, min(pa.max(), pb.max()) - max(pa.min(), pb.min()))
    return depth


def text_problems(
    fig: Figure, dpi: int = 150, min_font_pt: float = MIN_FONT_PT, overlap_pt: float = OVERLAP_PT
) -> list[str]:
    """What is wrong with the text of ``fig`` as saved: every text smaller than ``min_font_pt`` and
    every pair of texts whose boxes (rotated with the text) overlap by more than ``overlap_pt``.

    The figure is rendered exactly as :func:`save` writes it (PNG at ``dpi``, bbox "tight", its
    layout engine run) into memory, and each text is measured by the renderer that drew it; sizes
    are in points. Returns human-readable problems, empty when the text is clean.
    """
    with _recording_texts() as drawn:
        fig.savefig(io.BytesIO(), format="png", dpi=dpi, bbox_inches="tight")
    final = drawn[-1][0] if drawn else None  # bbox "tight" draws twice: the last renderer saved
    measured = list({id(t): (t, c) for r, t, c in drawn if r == final}.values())
    problems = [
        f"text {t.get_text()!r} is {t.get_fontsize():.1f} pt (smallest allowed {min_font_pt:g} pt)"
        for t, _ in measured if t.get_fontsize() < min_font_pt
    ]
    lows, highs = [c.min(axis=0) for _, c in measured], [c.max(axis=0) for _, c in measured]
    for i in range(len(measured)):
        for j in range(i + 1, len(measured)):
            if np.any(lows[i] > highs[j] - overlap_pt) or np.any(lows[j] > highs[i] - overlap_pt):
                continue  # the axis-aligned boxes are apart: quick rejection
            depth = _penetration(measured[i][1], measured[j][1])
            if depth > overlap_pt:
                a, b = measured[i][0].get_text(), measured[j][0].get_text()
                problems.append(f"text {a!r} overlaps {b!r} by {depth:.1f} pt")
    return problems


def save(fig: Figure, paths: Sequence[str | Path], dpi: int = 150) -> list[str]:
    """Write ``fig`` to each path (format from the suffix) and close it.

    Returns :func:`text_problems` of the figure (also logged as warnings and recorded in each PNG's
    :data:`TEXT_CHECK_KEY` entry: ``ok``, or the problems one per line).
    """
    problems = text_problems(fig, dpi=dpi)
    for problem in problems:
        _log.warning("figure %s: %s", Path(paths[0]).name if paths else "?", problem)
    verdict = "\n".join(problems) if problems else "ok"
    for path in paths:
        suffix = Path(path).suffix.lstrip(".")
        metadata = {"CreationDate": None} if suffix == "pdf" else {"Software": None}
        if suffix == "png":
            metadata[TEXT_CHECK_KEY] = verdict
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            fig.savefig(handle, format=suffix, dpi=dpi, metadata=metadata, bbox_inches="tight")
    plt.close(fig)
    return problems


def png_text_check(path: str | Path) -> str | None:
    """The :data:`TEXT_CHECK_KEY` entry :func:`save` wrote into the PNG at ``path`` (None: none)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.text.get(TEXT_CHECK_KEY)  # type: ignore[attr-defined]


def block_axis(ax, blocks: int) -> None:  # type: ignore[no-untyped-def]
    """A per-block x axis: every block ticked up to 16 blocks, integer ticks beyond; 7 pt labels, a grid."""
    if blocks <= 16:
        ax.set_xticks(range(1, blocks + 1))
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def figure_legend(fig: Figure, axes, chance: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """One legend right of the panels: every label of ``axes`` once, then (``chance``) the dashed grey chance line."""
    from matplotlib.lines import Line2D

    handles, labels = [], []
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if chance is not None:
        handles.append(Line2D([], [], color="grey", lw=1.0, ls="--"))
        labels.append(chance)
    fig.legend(handles, labels, loc="outside right center", fontsize=7, frameon=False)


def table_grid(rows: Rows, column: str) -> np.ndarray:
    """Table rows (block, head 1-indexed) -> (L, H) array of ``column``."""
    blocks = max(int(r["block"]) for r in rows)
    heads = max(int(r["head"]) for r in rows)
    out = np.full((blocks, heads), np.nan)
    for r in rows:
        out[int(r["block"]) - 1, int(r["head"]) - 1] = float(r[column])
    return out
