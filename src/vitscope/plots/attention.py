"""Figures of where the models attend (docs/attention.md): CLS maps and AAAM grids
(:func:`map_grid`, :func:`aaam_grid`), attention distance against block, saliency IoU,
the attention grids of exemplar images and the cross-model CLS-head figure. Functions
take arrays and table rows and return matplotlib figures; :func:`vitscope.plots.common.save`
writes them.

Panels that are compared share one colour scale with a colour bar (CLS maps: 0 to the
largest value; AAAM: its ratio to the AAAM of uniform attention, :func:`uniform_aaam`, on a
fixed log scale); where each panel keeps its own scale (the exemplar grids) it prints its
maximum as a multiple of uniform attention. Every text is at least 7 pt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ..attention import heads as detection
from ..attention import saliency
from .common import PALETTE, plt


def map_entropy(maps: np.ndarray) -> np.ndarray:
    """Normalised entropy of (..., h, w) maps -> (...) in [0, 1]: each map rescaled to sum 1,
    H = -sum p log p / log(h w); 0 for one cell (or a map of one cell), 1 for uniform, NaN for a map
    with a NaN or no mass."""
    flat = np.asarray(maps, np.float64).reshape(*np.shape(maps)[:-2], -1)
    total = flat.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = flat / total
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    entropy = terms.sum(axis=-1) / math.log(flat.shape[-1]) if flat.shape[-1] > 1 else np.zeros(flat.shape[:-1])
    return np.where(np.isfinite(total[..., 0]) & (total[..., 0] > 0) & np.isfinite(flat).all(axis=-1), entropy, np.nan)


def entropy_words(value: float) -> str:
    """A normalised entropy as printed on a panel: 3 decimals, or the gap to 1 between 0.999 and
    1 - 1e-12 (``1 - 5e-05``; closer to 1 is float rounding: ``1.000``), ``n/a`` for NaN."""
    if not math.isfinite(value):
        return "n/a"
    return f"1 - {1 - value:.0e}" if 0.999 < value < 1 - 1e-12 else f"{value:.3f}"


def _shared_top(*arrays: np.ndarray) -> float:
    """The largest finite value of ``arrays`` (the top of a shared 0-based colour scale); 1 if none is > 0."""
    finite = [a[np.isfinite(a)] for a in (np.asarray(x, np.float64) for x in arrays)]
    top = max((float(f.max()) for f in finite if f.size), default=0.0)
    return top if top > 0 else 1.0


def _bare(ax) -> None:  # type: ignore[no-untyped-def]
    ax.set_xticks([])
    ax.set_yticks([])


def _panel_note(ax, text: str, corner: str = "left") -> None:  # type: ignore[no-untyped-def]
    """A 7 pt note in the panel's upper ``corner`` (left or right), on a pale box so it reads on any colour."""
    x = 0.03 if corner == "left" else 0.97
    ax.text(x, 0.97, text, transform=ax.transAxes, ha=corner, va="top", fontsize=7,
            bbox={"boxstyle": "square,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75})


def _with_bad(cmap: str, colour: str = "#bdbdbd") -> matplotlib.colors.Colormap:
    """``cmap`` with NaN cells drawn in ``colour``."""
    return plt.get_cmap(cmap).with_extremes(bad=colour)


def _panel_grid(
    maps: np.ndarray,
    title: str,
    cmap: str,
    norm: matplotlib.colors.Normalize,
    notes: np.ndarray,
    value_label: str,
    row_label: str = "block",
    col_label: str = "head",
    extend: str = "neither",
) -> Figure:
    """(R, C, h, w) maps as an R x C grid of panels on the one colour scale ``norm``, a colour bar
    (``value_label``) and ``notes`` (R, C) printed in each panel's corner. Rows and columns are
    labelled 1-indexed; NaN cells are grey."""
    rows, cols = maps.shape[:2]
    aspect = maps.shape[3] / maps.shape[2]
    size = 1.1
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.0 + cols * size * aspect, 1.1 + rows * size), squeeze=False,
        layout="constrained",
    )
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.0, hspace=0.0)
    colours = _with_bad(cmap)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            image = ax.imshow(maps[r, c], cmap=colours, norm=norm, interpolation="nearest")
            _bare(ax)
            _panel_note(ax, str(notes[r, c]))
            if c == 0:
                ax.set_ylabel(f"{row_label} {r + 1}", fontsize=8)
            if r == 0:
                ax.set_title(f"{col_label} {c + 1}", fontsize=8)
    bar = fig.colorbar(image, ax=axes, shrink=min(1.0, 3.0 / rows + 0.3), aspect=25, extend=extend)
    bar.set_label(value_label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    return fig


def map_grid(
    maps: np.ndarray,
    title: str,
    cmap: str = "inferno",
    row_label: str = "block",
    col_label: str = "head",
    value_label: str = "mean CLS attention on the token",
) -> Figure:
    """(R, C, h, w) maps as an R x C grid of panels on one shared colour scale, 0 to the largest
    value of any panel, with a colour bar (``value_label``); each panel prints the normalised
    entropy H of its map (:func:`map_entropy`: 1 = uniform), so a flat map reads as flat.

    Rows and columns are labelled 1-indexed (``block 1``, ``head 1``); NaN cells are grey.
    """
    entropy = map_entropy(maps)
    notes = np.vectorize(lambda v: f"H {entropy_words(float(v))}", otypes=[object])(entropy)
    return _panel_grid(
        maps, title + "\none colour scale for all panels; H: normalised entropy of the map (1 = uniform)",
        cmap, matplotlib.colors.Normalize(0.0, _shared_top(maps)), notes, value_label, row_label, col_label,
    )


def _saliency_reason(row: Mapping[str, str]) -> str:
    """Why a saliency row's IoU is NaN: its ``note`` (tables written before the column: no mask)."""
    note = str(row.get("note") or "")
    if not note:
        note = saliency.NO_MASK if str(row.get("images", "")) in ("0", "") else "undefined"
    return note.removeprefix("undefined:").strip() or "undefined"


def saliency_by_block(
    tables: Mapping[str, Sequence[Mapping[str, str]]], mass: float = 0.6, title: str = ""
) -> Figure:
    """CLS attention saliency IoU against block, every model, two panels.

    Left: the best head chosen once per block (highest mean IoU over the
    dataset), with every head's mean IoU as a dot. Right: the study's
    per-image best head (mean over images of each image's best head).
    ``tables``: model -> rows of a saliency IoU table (block, selection, head, iou).
    A model whose every IoU is NaN is named in the legend as "model (n/a: reason)", the
    reason taken from the rows' ``note`` (e.g. every object mask empty: ``images`` = 0);
    every reason for a NaN IoU (a gap) is stated in the title.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.9), sharey=True, layout="constrained")
    panels = (
        ("best_head_once", "best head, chosen once per block\n(highest mean IoU over the dataset)"),
        ("per_image_best_head", "per-image best head (the study's)\n(mean over images of each image's best head)"),
    )
    reasons: list[str] = []
    for i, (model, rows) in enumerate(tables.items()):
        colour = PALETTE[i % len(PALETTE)]
        heads = [r for r in rows if r["selection"] == "head"]
        label = f"{model} ({max(int(r['head']) for r in heads)} heads)"
        undefined = [math.isnan(float(r["iou"])) for r in rows]
        why = sorted({_saliency_reason(r) for r, u in zip(rows, undefined, strict=True) if u})
        reasons += [w for w in why if w not in reasons]
        if undefined and all(undefined):
            label += f" (n/a: {'; '.join(why)})"
        jitter = (i - (len(tables) - 1) / 2) * 0.08
        axes[0].scatter(
            [int(r["block"]) + jitter for r in heads], [float(r["iou"]) for r in heads],
            s=9, color=colour, alpha=0.35, linewidths=0,
        )
        for ax, (selection, _) in zip(axes, panels, strict=True):
            sel = sorted((r for r in rows if r["selection"] == selection), key=lambda r: int(r["block"]))
            ax.plot([int(r["block"]) for r in sel], [float(r["iou"]) for r in sel], marker="o", ms=4,
                    color=colour, label=label)
    blocks = max((int(r["block"]) for rows in tables.values() for r in rows), default=1)
    for ax, (_, name) in zip(axes, panels, strict=True):
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("block")
        if blocks <= 24:
            ax.set_xticks(range(1, blocks + 1))
        else:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"IoU: CLS attention (top {mass:g} mass) vs object mask")
    axes[0].text(0.02, 0.98, "dots: every head's mean IoU", transform=axes[0].transAxes, fontsize=7, va="top")
    axes[1].legend(fontsize=8, frameon=False)
    explained = {saliency.NO_MASK.removeprefix("undefined: "): "no image with a non-empty object mask (images = 0)",
                 saliency.NO_MASS.removeprefix("undefined: "): "CLS attention with no spatial mass in every image "
                 "(zero_mass in the table)"}
    if reasons:
        title += ("\n" if title else "") + "gaps / n/a: " + "; ".join(explained.get(r, r) for r in reasons)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _query_box(ax, cell: tuple[int, int], patch_h: float, patch_w: float, colour: str = "cyan") -> None:  # type: ignore[no-untyped-def]
    """Outline token ``cell`` (row, col) inside its own area (inset by 6 %), so a box on the image's
    edge is drawn whole rather than clipped at the panel's border."""
    inset_h, inset_w = 0.06 * patch_h, 0.06 * patch_w
    ax.add_patch(matplotlib.patches.Rectangle(
        (cell[1] * patch_w + inset_w, cell[0] * patch_h + inset_h), patch_w - 2 * inset_w, patch_h - 2 * inset_h,
        fill=False, edgecolor=colour, linewidth=1.2,
    ))


def attention_grid(
    image: np.ndarray,
    maps: np.ndarray,
    queries: Sequence[str],
    query_cells: Sequence[tuple[int, int] | None],
    first_head: int = 0,
    title: str = "",
    cmap: str = "inferno",
    alpha: float = 0.65,
) -> Figure:
    """Attention maps of a few queries of one image, overlaid on the image.

    image: (h, w, 3) uint8 as the model saw it; maps: (L, Hg, Q, gh, gw), Hg heads starting at
    head ``first_head`` (0-based), each map a distribution over the gh x gw spatial keys. The
    first column shows the image itself (row 1) and, below it, the query tokens (``query_cells``,
    (row, col) or None for CLS) outlined and named by their initials (queries on one token share
    its label). Then rows are blocks and columns heads x
    queries: each map upsampled with nearest neighbour onto the image in grey, on its own colour
    scale from 0 to its maximum, which is printed on the panel as a multiple of uniform attention
    1/(gh gw) ("max 1.0x": the map is flat); the query token is outlined in cyan. Blocks and heads
    are labelled 1-indexed.
    """
    blocks, heads, nq, gh, gw = maps.shape
    h, w = image.shape[:2]
    size = 1.05
    gap = 0.2
    ratios = [1.0, gap]
    for k in range(heads):
        ratios += [1.0] * nq + ([gap] if k < heads - 1 else [])
    rows = max(blocks, 2)
    top_in, bottom_in, left_in = 0.95, 0.3, 0.45
    width = left_in + 0.1 + size * sum(ratios) * w / h * 1.04
    fig = plt.figure(figsize=(width, top_in + bottom_in + size * rows * 1.04))
    grid = fig.add_gridspec(
        rows, len(ratios), width_ratios=ratios, wspace=0.04, hspace=0.04,
        left=left_in / fig.get_figwidth(), right=1 - 0.1 / fig.get_figwidth(),
        top=1 - top_in / fig.get_figheight(), bottom=bottom_in / fig.get_figheight(),
    )
    extent = (0, w, h, 0)
    patch_h, patch_w = h / gh, w / gw
    raw = fig.add_subplot(grid[0, 0])
    raw.imshow(image, extent=extent)
    raw.set_title("image", fontsize=8, pad=3)
    _bare(raw)
    grey = image.astype(np.float64).mean(axis=-1)
    marked = fig.add_subplot(grid[1, 0])
    marked.imshow(grey, cmap="gray", vmin=0, vmax=255, extent=extent)
    letters: dict[tuple[int, int], str] = {}  # queries on one token (small grids) share its label
    for name, cell in zip(queries, query_cells, strict=True):
        if cell is not None:
            letters[cell] = letters.get(cell, "") + name[:1].upper()
    for cell, label in letters.items():
        _query_box(marked, cell, patch_h, patch_w)
        marked.text((cell[1] + 0.5) * patch_w, (cell[0] + 0.5) * patch_h, label, ha="center", va="center",
                    fontsize=7, color="cyan", fontweight="bold")
    marked.set_xlim(0, w)
    marked.set_ylim(h, 0)
    marked.set_xlabel("queries", fontsize=8, labelpad=2)
    _bare(marked)
    uniform = 1.0 / (gh * gw)
    for b in range(blocks):
        for k in range(heads):
            for q in range(nq):
                ax = fig.add_subplot(grid[b, 2 + k * (nq + 1) + q])
                ax.imshow(grey, cmap="gray", vmin=0, vmax=255, extent=extent)
                values = maps[b, k, q]
                top = float(np.nanmax(values)) if np.isfinite(values).any() else math.nan
                ax.imshow(values, cmap=cmap, alpha=alpha, interpolation="nearest", extent=extent,
                          vmin=0.0, vmax=top if top > 0 else 1.0)
                cell = query_cells[q]
                if cell is not None:
                    _query_box(ax, cell, patch_h, patch_w)
                ax.set_xlim(0, w)
                ax.set_ylim(h, 0)
                _bare(ax)
                # upper right: clear of the top query (the middle column) and of the left one
                _panel_note(ax, f"max {top / uniform:.1f}x" if math.isfinite(top) else "n/a", corner="right")
                if k == 0 and q == 0:
                    ax.set_ylabel(f"block {b + 1}", fontsize=8)
                if b == 0:
                    ax.set_title(queries[q], fontsize=8, pad=3)
                    if q == 0:
                        left = ax.get_position().x0
                    if q == nq - 1:
                        right = ax.get_position().x1
                        fig.text((left + right) / 2, ax.get_position().y1 + 0.25 / fig.get_figheight(),
                                 f"head {first_head + k + 1}", ha="center", va="bottom", fontsize=9,
                                 fontweight="bold")
    note = ("colour: 0 to each panel's own maximum; printed: that maximum as a multiple of uniform "
            f"attention 1/{gh * gw} (1.0x = flat); cyan: the query token")
    fig.suptitle((title + "\n" if title else "") + note, fontsize=8, y=1 - 0.06 / fig.get_figheight(), va="top")
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
    """Per-head breakout: one panel per model; per block, every head's attention distance as an
    open circle at the block's x and their mean as a black bar. Nothing joins blocks: head k of
    one block has nothing to do with head k of the next.

    ``tables``: model -> rows of a distance table (block, head, distance_px, distance_grid).
    """
    column = "distance_px" if units == "pixels" else "distance_grid"
    n = len(tables)
    cols = min(n, 4)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(0.6 + 3.3 * cols, 0.9 + 2.9 * nrows), squeeze=False,
                             sharey=True, layout="constrained")
    for i, (ax, (model, rows)) in enumerate(zip(axes.flat, tables.items(), strict=False)):
        colour = PALETTE[i % len(PALETTE)]
        blocks = np.array([int(r["block"]) for r in rows])
        heads = np.array([int(r["head"]) for r in rows])
        values = np.array([float(r[column]) for r in rows])
        count = max(int(heads.max()), 1)
        ax.scatter(blocks, values, s=16, facecolors="none", edgecolors=colour, linewidths=0.9, label="one head")
        order = np.unique(blocks)
        means = [np.nanmean(values[blocks == b]) if np.isfinite(values[blocks == b]).any() else np.nan for b in order]
        ax.scatter(order, means, marker="_", s=220, color="black", linewidths=1.6, zorder=3, label="mean over heads")
        ax.set_title(f"{model} ({count} heads)", fontsize=9)
        ax.set_xlabel("block", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("attention distance " + ("(pixels)" if units == "pixels" else "(fraction of grid)"), fontsize=8)
    axes[0, 0].legend(fontsize=7, frameon=False, loc="best")
    note = "circles: the heads of a block (one column per block); bar: their mean"
    fig.suptitle((title + "\n" if title else "") + note,
                 fontsize=9)
    return fig


def uniform_aaam(grid: tuple[int, int]) -> np.ndarray:
    """The AAAM uniform attention gives on a gh x gw grid, (2gh-1, 2gw-1), sum 1
    (:func:`vitscope.attention.heads.uniform_aaam` as a numpy array)."""
    return detection.uniform_aaam(grid).numpy()


def aaam_ratio(aaam: np.ndarray) -> np.ndarray:
    """(..., 2gh-1, 2gw-1) AAAMs divided by :func:`uniform_aaam` of their grid: at each displacement,
    the attention a query gives the token there, averaged over the queries that have one, in units
    of uniform attention 1/G (1 = what uniform attention gives; > 1 attended more)."""
    gh, gw = (aaam.shape[-2] + 1) // 2, (aaam.shape[-1] + 1) // 2
    return np.asarray(aaam, np.float64) / uniform_aaam((gh, gw))


#: the fixed range of the AAAM figure's ratio scale, 1/r to r: every model's figure uses the same
#: colours, so a weakly local head (ratio 1.3 at the query) stays pale beside a strongly local one
AAAM_RATIO_RANGE = 10.0


def _ratio_norm(ratio: np.ndarray, r: float = AAAM_RATIO_RANGE) -> tuple[matplotlib.colors.LogNorm, str]:
    """The log colour scale 1/r to r (1, uniform, in the middle) and the colour bar's ``extend``:
    which ends some finite ``ratio`` passes (0 counts as below; both are drawn at the end colour)."""
    finite = ratio[np.isfinite(ratio)]
    low, high = bool((finite < 1 / r).any()), bool((finite > r).any())
    return matplotlib.colors.LogNorm(1 / r, r), {(False, False): "neither", (True, False): "min",
                                                 (False, True): "max", (True, True): "both"}[(low, high)]


def _ratio_ticks(top: float) -> list[float]:
    """Round ticks of a ratio scale 1/top .. top: 1 and the values 1, 2, 5 x 10^k (and their
    reciprocals) inside it, thinned to at most 4 on each side."""
    up = [m * 10.0**k for k in range(0, 7) for m in (1.0, 2.0, 5.0) if 1 < m * 10.0**k <= top * (1 + 1e-9)]
    if not up:
        up = [top]
    step = max(1, math.ceil(len(up) / 4))
    up = up[::-1][::step][::-1]
    return [1 / v for v in reversed(up)] + [1.0] + up


def aaam_grid(aaam: np.ndarray, title: str, cmap: str = "RdBu_r") -> Figure:
    """(L, H, 2gh-1, 2gw-1) AAAMs as a block x head grid of their ratio to the uniform-attention
    AAAM (:func:`aaam_ratio`) on one fixed log colour scale, 1/:data:`AAAM_RATIO_RANGE` to
    :data:`AAAM_RATIO_RANGE` for every panel and model (a diverging ``cmap`` shows uniform, 1, as
    its middle; ratios beyond the range take the end colours), the query cell marked with a black +.
    Each panel prints the ratio at the query cell ("self 3.2x": the query attends to its own token 3.2 times as much
    as uniform attention would). The raw AAAM of uniform attention is a tent, so every head looks
    local before this division; after it, a flat map is a global head and only real locality is red.
    """
    ratio = aaam_ratio(aaam)
    norm, extend = _ratio_norm(ratio)
    gh, gw = (aaam.shape[2] + 1) // 2, (aaam.shape[3] + 1) // 2
    centre = ratio[:, :, gh - 1, gw - 1]
    notes = np.vectorize(lambda v: f"self {v:.2g}x" if math.isfinite(v) else "n/a", otypes=[object])(centre)
    shown = np.where(np.isfinite(ratio), np.clip(ratio, norm.vmin, norm.vmax), np.nan)
    fig = _panel_grid(
        shown, title + "\nAAAM / AAAM of uniform attention (the tent of the grid's overlap counts), one fixed log "
        "scale for all panels and models;\n1 = uniform, > 1: attended more than uniform; +: the query token; "
        "self: the ratio at the query",
        cmap, norm, notes, "AAAM / uniform-attention AAAM", extend=extend,
    )
    for ax in fig.axes[:-1]:
        ax.plot(gw - 1, gh - 1, marker="+", color="black", ms=5, mew=0.8)
    bar = fig.axes[-1]
    ticks = _ratio_ticks(norm.vmax)
    bar.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    bar.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    bar.yaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([f"{v:.3g}" for v in ticks]))
    return fig


def cls_heads_figure(
    maps: Mapping[str, np.ndarray],
    chosen: Mapping[str, Sequence[tuple[int, int, str]]],
    entropy: Mapping[str, np.ndarray],
    candidates: Mapping[str, tuple[int, int]] | None = None,
    title: str = "",
    cmap: str = "inferno",
) -> Figure:
    """Models as rows, chosen heads as columns: averaged CLS maps on one shared colour scale
    (0 to the largest value shown) with a colour bar, so models compare directly.

    maps: model -> (L, H, gh, gw); chosen: model -> [(block, head, role)] 1-indexed;
    entropy: model -> (L, H) normalised entropy shown under each panel;
    candidates: model -> (first, last) 1-indexed candidate blocks, shown with the model name.
    """
    models = list(maps)
    cols = max(len(c) for c in chosen.values())
    fig, axes = plt.subplots(len(models), cols, figsize=(2.2 + 1.9 * cols, 1.1 + 2.0 * len(models)),
                             squeeze=False, layout="constrained")
    shown = [maps[m][b - 1, h - 1] for m in models for b, h, _ in chosen[m]]
    norm = matplotlib.colors.Normalize(0.0, _shared_top(*shown))
    colours = _with_bad(cmap)
    image = None
    for r, model in enumerate(models):
        for c in range(cols):
            ax = axes[r, c]
            _bare(ax)
            if c >= len(chosen[model]):
                ax.set_visible(False)
                continue
            block, head, role = chosen[model][c]
            image = ax.imshow(maps[model][block - 1, head - 1], cmap=colours, norm=norm, interpolation="nearest")
            value = float(entropy[model][block - 1, head - 1])
            ax.set_xlabel(f"block {block}, head {head}\nentropy {entropy_words(value)}", fontsize=7)
            if c == 0:
                span = f"\n(blocks {candidates[model][0]}-{candidates[model][1]})" if candidates else ""
                ax.set_ylabel(model + span, fontsize=9)
            if r == 0:
                ax.set_title(role, fontsize=8)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=min(1.0, 0.5 + 0.5 / len(models)), aspect=25)
        bar.set_label("mean CLS attention on the token", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    fig.suptitle((title + "\n" if title else "") + "one colour scale for all panels (colour bar)", fontsize=9)
    return fig
