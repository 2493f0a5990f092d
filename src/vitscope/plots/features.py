"""Figures of the feature metrics (docs/features.md): full-depth CKA of a model pair,
last-layer CKA of every model pair, clustering scores against depth. Functions take
arrays and table rows and return matplotlib figures; :func:`vitscope.plots.common.save`
writes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ..features.cka import point_labels
from .common import PALETTE, plt

REP_TITLES = {"cls": "CLS token", "spatial": "spatial tokens", "all": "all tokens"}
CLUSTER_REP_TITLES = {"cls": "CLS token", "spatial": "mean of spatial tokens",
                      "object": "mask-weighted mean of spatial tokens"}
METRIC_TITLES = {"purity": "purity", "nmi": "NMI (arithmetic)", "ari": "ARI"}


def _point_ticks(axis, labels: Sequence[str], every: int) -> None:
    """Ticks at every ``every``-th label (always the last one), small font."""
    ticks = list(range(0, len(labels), every))
    if ticks[-1] != len(labels) - 1:
        ticks.append(len(labels) - 1)
    axis.set_ticks(ticks, [labels[t] for t in ticks], fontsize=6)


def full_depth(
    cka: Mapping[str, np.ndarray],
    model_a: str,
    model_b: str,
    title: str = "",
    cmap: str = "viridis",
) -> Figure:
    """CKA at every LayerNorm output: one (2L_A, 2L_B) panel per representation.

    ``cka``: representation -> (2L_A, 2L_B) array (rows model A, columns model B);
    points labelled "3.n1" / "3.n2" (block 3's norm1 / norm2), block 1 at the origin.
    All panels share one colour scale, [0, 1].
    """
    reps = list(cka)
    first = cka[reps[0]]
    rows, cols = first.shape
    side = 3.0 * max(rows, cols) / 24 + 1.6
    fig, axes = plt.subplots(
        1, len(reps), figsize=(0.6 + len(reps) * side * max(cols / rows, 0.6), 0.4 + side), squeeze=False,
        layout="constrained",
    )
    labels_a, labels_b = point_labels(rows, "norms"), point_labels(cols, "norms")
    every_a, every_b = 1 if rows <= 24 else 2, 1 if cols <= 24 else 2
    colours = plt.get_cmap(cmap).with_extremes(bad="#bdbdbd")
    for ax, rep in zip(axes[0], reps, strict=True):
        image = ax.imshow(cka[rep], cmap=colours, vmin=0, vmax=1, origin="lower", interpolation="nearest")
        _point_ticks(ax.yaxis, labels_a, every_a)
        _point_ticks(ax.xaxis, labels_b, every_b)
        ax.tick_params(axis="x", labelrotation=90)
        ax.set_title(REP_TITLES.get(rep, rep), fontsize=9)
        ax.set_xlabel(f"{model_b}: LayerNorm output (block.n1 / n2)", fontsize=8)
        ax.set_ylabel(f"{model_a}: LayerNorm output", fontsize=8)
    bar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    bar.set_label("linear CKA (minibatch, unbiased HSIC)", fontsize=8)
    if any(np.isnan(v).any() for v in cka.values()):
        title += ("\n" if title else "") + "grey: undefined (features constant over images, e.g. CLS at 1.n1)"
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def last_layer(
    matrix: np.ndarray, models: Sequence[str], reps: Sequence[str], title: str = "", cmap: str = "viridis"
) -> Figure:
    """Model x model CKA of the final block outputs, one panel per representation.

    matrix: (R, K, K) CKA for R representations and K models, values printed in the cells.
    """
    k = len(models)
    side = 1.2 + 0.55 * k
    fig, axes = plt.subplots(1, len(reps), figsize=(0.8 + len(reps) * side, 0.9 + side), squeeze=False,
                             layout="constrained")
    colours = plt.get_cmap(cmap).with_extremes(bad="#bdbdbd")
    for ax, rep, values in zip(axes[0], reps, matrix, strict=True):
        image = ax.imshow(values, cmap=colours, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks(range(k), models, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(k), models, fontsize=7)
        ax.set_title(REP_TITLES.get(rep, rep), fontsize=9)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    if np.isfinite(values[i, j]):
                        colour = "black" if values[i, j] > 0.6 else "white"
                        ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7, color=colour)
                    else:
                        ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="black")
    bar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    bar.set_label("linear CKA of the last block outputs", fontsize=8)
    if np.isnan(matrix).any():
        title += ("\n" if title else "") + "grey / n/a: undefined (features constant over images) or pair not computed"
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def clustering(
    rows: Sequence[Mapping[str, str]],
    metric: str,
    models: Sequence[str],
    reps: Sequence[str] = ("cls", "spatial"),
    title: str = "",
) -> Figure:
    """One clustering metric against block (1-indexed): a panel per representation,
    a line per model (ARI: a dashed line at 0, chance). ``rows``: tidy clustering rows
    (model, block, representation, metric, value, note). Undefined (NaN) values are gaps in
    the lines; a model with no defined value in a panel is listed in the legend as
    "model (n/a: reason)" from the rows' ``note``, and the title says values are missing."""
    fig, axes = plt.subplots(1, len(reps), figsize=(max(5.2, 3.6 * len(reps) + 0.4), 3.4), squeeze=False, sharey=True,
                             layout="constrained")
    missing = False
    for ax, rep in zip(axes[0], reps, strict=True):
        for i, model in enumerate(models):
            mine = [r for r in rows if r["model"] == model and r["representation"] == rep and r["metric"] == metric]
            sel = sorted((int(r["block"]), float(r["value"])) for r in mine)
            undefined = sorted({str(r.get("note") or "undefined") for r in mine if math.isnan(float(r["value"]))})
            missing = missing or bool(undefined)
            label = model
            if sel and all(math.isnan(v) for _, v in sel):
                label = f"{model} (n/a: {'; '.join(n.removeprefix('undefined: ') for n in undefined)})"
                ax.plot([], [], marker="o", ms=3.5, color=PALETTE[i % len(PALETTE)], ls="none", label=label)
            elif sel:
                ax.plot(*zip(*sel, strict=True), marker="o", ms=3.5, color=PALETTE[i % len(PALETTE)], label=label)
        ax.set_title(CLUSTER_REP_TITLES.get(rep, rep), fontsize=9)
        ax.set_xlabel("block", fontsize=8)
        blocks = max((int(r["block"]) for r in rows), default=1)
        if blocks <= 16:
            ax.set_xticks(range(1, blocks + 1))
        else:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if metric == "ari":
            ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(METRIC_TITLES.get(metric, metric), fontsize=8)
    axes[0, -1].legend(fontsize=7, frameon=False)
    if missing:
        title += ("\n" if title else "") + "gaps / n/a: undefined values (the table's note column says why)"
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
