"""Figures of the offset-local heads (docs/attention.md): offset heatmaps, the
detector's label maps and the centre-of-mass scatter. Functions take table rows and
return matplotlib figures; :func:`vitscope.plots.common.save` writes them.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from .common import PALETTE, Rows, plt, table_grid

LABEL_COLOURS = {"global": "#d9d9d9", "local": "#6baed6", "offset-local": "#fd8d3c"}


def _block_head_axes(ax, blocks: int, heads: int) -> None:
    step_b = max(1, int(np.ceil(blocks / 12)))
    step_h = max(1, int(np.ceil(heads / 16)))
    ax.set_xticks(range(0, heads, step_h), [str(h + 1) for h in range(0, heads, step_h)], fontsize=7)
    ax.set_yticks(range(0, blocks, step_b), [str(b + 1) for b in range(0, blocks, step_b)], fontsize=7)
    ax.set_xlabel("head", fontsize=8)
    ax.set_ylabel("block", fontsize=8)


def _arrows(ax, rows: Rows, lift: float = 0.0) -> None:
    """An arrow in every offset-local head's cell pointing along its peak displacement
    (centred ``lift`` cells above the cell centre)."""
    for r in rows:
        if r["label"] != "offset-local":
            continue
        dx, dy = float(r["peak_dx"]), float(r["peak_dy"])
        norm = max(np.hypot(dx, dy), 1e-9)
        x, y = int(r["head"]) - 1, int(r["block"]) - 1 - lift
        ax.annotate(
            "", xy=(x + 0.3 * dx / norm, y + 0.3 * dy / norm), xytext=(x - 0.25 * dx / norm, y - 0.25 * dy / norm),
            arrowprops={"arrowstyle": "-|>", "color": "black", "lw": 1.0, "mutation_scale": 7},
        )


#: the fixed top of the offset colour scale, in tokens: an offset-local head's centre of mass sits about
#: one token from the query, a local or global head's near 0; larger offsets get the top colour
OFFSET_SCALE_TOKENS = 1.0


def offset_heatmap(rows: Rows, title: str, cmap: str = "viridis") -> Figure:
    """Offset (tokens) of every head's AAAM centre of mass, blocks x heads, on one fixed colour
    scale (0 to :data:`OFFSET_SCALE_TOKENS`, larger values in the top colour), so the figures of
    different models compare; each cell prints its value (NaN: ``n/a`` on grey). Offset-local heads
    are outlined, with an arrow along their peak direction."""
    offset = table_grid(rows, "offset_tokens")
    blocks, heads = offset.shape
    fig, ax = plt.subplots(figsize=(2.6 + 0.5 * heads, 1.6 + 0.42 * blocks), layout="constrained")
    colours = plt.get_cmap(cmap).with_extremes(bad="#bdbdbd")
    image = ax.imshow(offset, cmap=colours, vmin=0, vmax=OFFSET_SCALE_TOKENS, aspect="auto")
    extend = "max" if np.nanmax(offset, initial=0.0) > OFFSET_SCALE_TOKENS else "neither"
    bar = fig.colorbar(image, ax=ax, shrink=min(1.0, 0.4 + 2.0 / blocks), extend=extend, aspect=20)
    bar.set_label("offset (tokens)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if blocks * heads <= 400:
        for b in range(blocks):
            for h in range(heads):
                value = offset[b, h]
                words = "n/a" if not np.isfinite(value) else f"{value:.2f}"
                dark = not np.isfinite(value) or value > 0.6 * OFFSET_SCALE_TOKENS
                ax.text(h, b + 0.27, words, ha="center", va="center", fontsize=7, color="black" if dark else "white")
    for r in rows:
        if r["label"] == "offset-local":
            ax.add_patch(Rectangle((int(r["head"]) - 1.5, int(r["block"]) - 1.5), 1, 1, fill=False, ec="red", lw=1.4))
    _arrows(ax, rows, lift=0.15 if blocks * heads <= 400 else 0.0)
    _block_head_axes(ax, blocks, heads)
    found = sum(r["label"] == "offset-local" for r in rows)
    marks = ("red box + arrow: offset-local head (arrow: direction of its AAAM peak)" if found
             else "no offset-local head under the detector's thresholds")
    fig.suptitle(f"{title}\nAAAM centre of mass, distance from the query; {marks}", fontsize=8)
    return fig


def label_maps(tables: Mapping[str, Rows], title: str = "") -> Figure:
    """One block x head panel per model coloured by the detector's label; arrows give the
    direction of offset-local heads."""
    n = len(tables)
    cols = min(n, 4)
    nrows = int(np.ceil(n / cols))
    shapes = [table_grid(rows, "offset").shape for rows in tables.values()]
    height = max(s[0] for s in shapes)
    width = max(s[1] for s in shapes)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(0.8 + cols * (0.8 + 0.3 * width), 1.4 + nrows * (1.1 + 0.3 * height)),
        squeeze=False, layout="constrained",
    )
    colours = list(LABEL_COLOURS.values())
    index = {name: i for i, name in enumerate(LABEL_COLOURS)}
    cmap = matplotlib.colors.ListedColormap(colours)
    for ax, (model, rows) in zip(axes.flat, tables.items(), strict=False):
        blocks, heads = table_grid(rows, "offset").shape
        codes = np.zeros((blocks, heads))
        for r in rows:
            codes[int(r["block"]) - 1, int(r["head"]) - 1] = index[r["label"]]
        ax.imshow(codes, cmap=cmap, vmin=-0.5, vmax=len(colours) - 0.5, aspect="equal")
        ax.set_xticks(np.arange(-0.5, heads), minor=True)
        ax.set_yticks(np.arange(-0.5, blocks), minor=True)
        ax.grid(which="minor", color="white", lw=0.8)
        ax.tick_params(which="minor", length=0)
        _arrows(ax, rows)
        _block_head_axes(ax, blocks, heads)
        found = sum(r["label"] == "offset-local" for r in rows)
        ax.set_title(f"{model}: {found} offset-local", fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    first = next(iter(tables.values()))[0]
    rule = (
        f"thresholds: neighbourhood radius {first['radius']} token(s), mass >= {float(first['min_mass']):g}"
        + (f" and >= {float(first['min_lift']):g} x uniform attention's" if "min_lift" in first else "")
        + f", shift >= {float(first['min_shift']):g} token(s)"
    )
    handles = [Patch(color=c, label=name) for name, c in LABEL_COLOURS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    if not any(r["label"] == "offset-local" for rows in tables.values() for r in rows):
        rule += "\n" + none_found(first)
    fig.suptitle((title + "\n" if title else "") + rule, fontsize=9)
    return fig


def none_found(row: Mapping[str, str]) -> str:
    """The sentence :func:`label_maps` prints when no model has an offset-local head, with the
    criterion of ``row`` (any row of the tables: every row carries its thresholds)."""
    return (
        f"NONE FOUND: no model has an offset-local head. Criterion: at least {float(row['min_mass']):g} of the "
        f"head's AAAM\nwithin {row['radius']} token(s) of its peak"
        + (f" (and {float(row['min_lift']):g} x what uniform attention puts there)" if "min_lift" in row else "")
        + f", and that neighbourhood's centre of mass at least {float(row['min_shift']):g} token(s) from the query."
    )


def offset_scatter(tables: Mapping[str, Rows], units: str = "grid", title: str = "") -> Figure:
    """Centre of mass (cx, cy) of every head's AAAM, all models; offset-local heads as stars.

    ``units``: 'grid' (the protocol's [-1, 1] canvas coordinates, one token = 1/(g-1)) or
    'tokens'. y grows downwards, as on the image.
    """
    suffix = "_tokens" if units == "tokens" else ""
    fig, ax = plt.subplots(figsize=(5.6, 5.0), layout="constrained")
    for i, (model, rows) in enumerate(tables.items()):
        colour = PALETTE[i % len(PALETTE)]
        x = np.array([float(r["cx" + suffix]) for r in rows])
        y = np.array([float(r["cy" + suffix]) for r in rows])
        special = np.array([r["label"] == "offset-local" for r in rows])
        ax.scatter(x[~special], y[~special], s=14, color=colour, alpha=0.6, linewidths=0)
        ax.scatter(x[special], y[special], s=70, color=colour, marker="*", edgecolors="black", linewidths=0.5)
        ax.scatter([], [], s=20, color=colour, label=f"{model} ({special.sum()} offset-local)")
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_aspect("equal", adjustable="datalim")
    ax.invert_yaxis()
    unit = "tokens" if units == "tokens" else "grid units, one token = 1/(g-1)"
    ax.set_xlabel(f"cx, AAAM centre of mass right of the query ({unit})", fontsize=8)
    ax.set_ylabel(f"cy, below the query ({unit})", fontsize=8)
    ax.grid(alpha=0.3)
    star = Line2D([], [], ls="", marker="*", ms=9, mfc="white", mec="black", label="offset-local head")
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=[*handles, star], fontsize=7, frameon=False, loc="best")
    ax.set_title(title or "AAAM centre of mass of every head", fontsize=9)
    return fig
