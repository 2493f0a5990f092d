"""Figures of where the models attend (docs/attention.md): CLS maps and AAAM grids
(:func:`map_grid`, :func:`aaam_grid`), attention distance against block, saliency IoU,
the attention grids of exemplar images and the cross-model CLS-head figure. Functions
take arrays and table rows and return matplotlib figures; :func:`vitscope.plots.common.save`
writes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ..attention import saliency
from .common import PALETTE, plt


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

    image: (h, w, 3) uint8 as the model saw it; maps: (L, Hg, Q, gh, gw), Hg
    heads starting at head ``first_head`` (0-based). Rows are blocks, columns
    are heads x queries; each map is upsampled with nearest neighbour onto the
    image and drawn on its own colour scale; the query token (``query_cells``,
    (row, col) or None for CLS) is outlined in cyan. Blocks and heads are
    labelled 1-indexed.
    """
    blocks, heads, nq, gh, gw = maps.shape
    h, w = image.shape[:2]
    size = 0.72
    gap = 0.25
    ratios = []
    for k in range(heads):
        ratios += [1.0] * nq + ([gap] if k < heads - 1 else [])
    fig = plt.figure(figsize=(0.5 + size * sum(ratios) * w / h * 1.02, 0.9 + size * blocks))
    grid = fig.add_gridspec(
        blocks, len(ratios), width_ratios=ratios, wspace=0.04, hspace=0.04,
        left=0.4 / fig.get_figwidth(), right=1 - 0.05 / fig.get_figwidth(),
        top=1 - 0.75 / fig.get_figheight(), bottom=0.1 / fig.get_figheight(),
    )
    grey = image.astype(np.float64).mean(axis=-1)
    patch_h, patch_w = h / gh, w / gw
    for b in range(blocks):
        for k in range(heads):
            for q in range(nq):
                ax = fig.add_subplot(grid[b, k * (nq + 1) + q])
                ax.imshow(grey, cmap="gray", vmin=0, vmax=255, extent=(0, w, h, 0))
                ax.imshow(maps[b, k, q], cmap=cmap, alpha=alpha, interpolation="nearest", extent=(0, w, h, 0))
                cell = query_cells[q]
                if cell is not None:
                    ax.add_patch(matplotlib.patches.Rectangle(
                        (cell[1] * patch_w, cell[0] * patch_h), patch_w, patch_h,
                        fill=False, edgecolor="cyan", linewidth=0.9, clip_on=False,
                    ))
                ax.set_xlim(0, w)
                ax.set_ylim(h, 0)
                ax.set_xticks([])
                ax.set_yticks([])
                if k == 0 and q == 0:
                    ax.set_ylabel(f"block {b + 1}", fontsize=7)
                if b == 0:
                    ax.set_title(queries[q], fontsize=6, pad=2)
                    if q == 0:
                        left = ax.get_position().x0
                    if q == nq - 1:
                        right = ax.get_position().x1
                        fig.text((left + right) / 2, ax.get_position().y1 + 0.16 / fig.get_figheight(),
                                 f"head {first_head + k + 1}", ha="center", va="bottom", fontsize=8,
                                 fontweight="bold")
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.08 / fig.get_figheight(), va="top")
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


def aaam_grid(aaam: np.ndarray, title: str, cmap: str = "inferno") -> Figure:
    """(L, H, 2gh-1, 2gw-1) AAAMs as a block x head grid; the query cell marked with a cyan +."""
    fig = map_grid(aaam, title + "; cyan +: the query token", cmap=cmap)
    gh, gw = (aaam.shape[2] + 1) // 2, (aaam.shape[3] + 1) // 2
    for ax in fig.axes:
        ax.plot(gw - 1, gh - 1, marker="+", color="cyan", ms=4, mew=0.6)
    return fig


def cls_heads_figure(
    maps: Mapping[str, np.ndarray],
    chosen: Mapping[str, Sequence[tuple[int, int, str]]],
    entropy: Mapping[str, np.ndarray],
    candidates: Mapping[str, tuple[int, int]] | None = None,
    title: str = "",
    cmap: str = "inferno",
) -> Figure:
    """Models as rows, chosen heads as columns: averaged CLS maps.

    maps: model -> (L, H, gh, gw); chosen: model -> [(block, head, role)] 1-indexed;
    entropy: model -> (L, H) normalised entropy shown under each panel;
    candidates: model -> (first, last) 1-indexed candidate blocks, shown with the model name.
    """
    models = list(maps)
    cols = max(len(c) for c in chosen.values())
    fig, axes = plt.subplots(len(models), cols, figsize=(1.2 + 1.9 * cols, 0.9 + 2.0 * len(models)),
                             squeeze=False, layout="constrained")
    for r, model in enumerate(models):
        for c, (block, head, role) in enumerate(chosen[model]):
            ax = axes[r, c]
            ax.imshow(maps[model][block - 1, head - 1], cmap=cmap, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            value = entropy[model][block - 1, head - 1]
            words = f"1 - {1 - value:.1e}" if value > 0.999 else f"{value:.3f}"
            ax.set_xlabel(f"block {block}, head {head}\nentropy {words}", fontsize=7)
            if c == 0:
                span = f"\n(blocks {candidates[model][0]}-{candidates[model][1]})" if candidates else ""
                ax.set_ylabel(model + span, fontsize=9)
            if r == 0:
                ax.set_title(role, fontsize=8)
    fig.suptitle((title + "\n" if title else "") + "(each panel on its own colour scale)", fontsize=9)
    return fig
