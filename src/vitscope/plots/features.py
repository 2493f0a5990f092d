"""Figures of the feature metrics (docs/features.md): full-depth CKA of a model pair,
last-layer CKA of every model pair, clustering scores against depth. Functions take
arrays and table rows and return matplotlib figures; :func:`vitscope.plots.common.save`
writes them.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..features.cka import point_labels
from .common import PALETTE, block_axis, figure_legend, plt

REP_TITLES = {"cls": "CLS token", "spatial": "spatial tokens", "all": "all tokens"}
CLUSTER_REP_TITLES = {"cls": "CLS token", "spatial": "mean of spatial tokens",
                      "object": "mask-weighted mean of spatial tokens"}
METRIC_TITLES = {"purity": "purity", "nmi": "NMI (arithmetic)", "ari": "ARI"}


TICK_PT = 7.0


def _point_ticks(axis, labels: Sequence[str], every: int) -> None:
    """Ticks at every ``every``-th label (the first one included), :data:`TICK_PT` font."""
    ticks = list(range(0, len(labels), every))
    axis.set_ticks(ticks, [labels[t] for t in ticks], fontsize=TICK_PT)


def tick_step(points: int, length_in: float, pitch_pt: float = 1.6 * TICK_PT) -> int:
    """Label every n-th of ``points`` cells along a ``length_in`` inch axis so that labels are at
    least ``pitch_pt`` apart; n is 1, or even so that every label is a block's n1."""
    room = 72.0 * length_in / max(points, 1)
    step = max(1, math.ceil(pitch_pt / room))
    return step if step == 1 else step + step % 2


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
    width, height = side * max(cols / rows, 0.6), side
    fig, axes = plt.subplots(
        1, len(reps), figsize=(1.4 + len(reps) * width, 1.2 + height), squeeze=False, sharey=True,
        layout="constrained",
    )
    labels_a, labels_b = point_labels(rows, "norms"), point_labels(cols, "norms")
    every_a, every_b = tick_step(rows, 0.8 * height), tick_step(cols, 0.8 * width)
    colours = plt.get_cmap(cmap).with_extremes(bad="#bdbdbd")
    for ax, rep in zip(axes[0], reps, strict=True):
        image = ax.imshow(cka[rep], cmap=colours, vmin=0, vmax=1, origin="lower", interpolation="nearest")
        _point_ticks(ax.yaxis, labels_a, every_a)
        _point_ticks(ax.xaxis, labels_b, every_b)
        ax.tick_params(axis="x", labelrotation=90)
        ax.set_title(REP_TITLES.get(rep, rep), fontsize=9)
    axes[0, 0].set_ylabel(f"{model_a}: LayerNorm output", fontsize=8)
    fig.supxlabel(f"{model_b}: LayerNorm output (block.n1 / block.n2)", fontsize=8)
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
    fig, axes = plt.subplots(1, len(reps), figsize=(1.6 + len(reps) * side, 1.6 + side), squeeze=False,
                             sharey=True, layout="constrained")
    colours = plt.get_cmap(cmap).with_extremes(bad="#bdbdbd")
    for ax, rep, values in zip(axes[0], reps, matrix, strict=True):
        image = ax.imshow(values, cmap=colours, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks(range(k), models, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(k), models, fontsize=7)
        ax.tick_params(axis="y", labelleft=ax is axes[0, 0])
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


CHANCE_LABELS = {
    "purity": "chance: random clustering,\nsame cluster sizes\n(mean of 100 permutations;\nband: range over models)",
    "nmi": "chance: random clustering,\nsame cluster sizes (exact;\nband: range over models)",
    "ari": "chance: 0 (random clustering)",
}


def _count(rows: Sequence[Mapping[str, str]], column: str) -> str:
    values = sorted({int(float(r[column])) for r in rows if str(r.get(column, "")).strip() not in ("", "nan")})
    if not values:
        return ""
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def clustering(
    rows: Sequence[Mapping[str, str]],
    metric: str,
    models: Sequence[str],
    reps: Sequence[str] = ("cls", "spatial"),
    title: str = "",
) -> Figure:
    """One clustering metric against block (1-indexed): a panel per representation, a line per
    model. ``rows``: tidy clustering rows (vitscope.features.clustering.CLUSTER_COLUMNS, strings).

    Chance: the rows' ``chance`` (the score of a random clustering with the same cluster sizes)
    as a dashed grey line at the models' mean per block and a grey band over their range
    (ARI: 0);
    the title states the images (objects) and classes clustered. Undefined (NaN) values are gaps
    in the lines; a model with no defined value in a panel is listed in the legend as
    "model (n/a: reason)" from the rows' ``note``, and the title says values are missing."""
    fig, axes = plt.subplots(1, len(reps), figsize=(max(5.2, 3.6 * len(reps) + 0.4) + 1.6, 3.6), squeeze=False,
                             sharey=True, layout="constrained")
    missing = False
    chance_drawn = False
    blocks = max((int(r["block"]) for r in rows), default=1)
    for ax, rep in zip(axes[0], reps, strict=True):
        here = [r for r in rows if r["representation"] == rep and r["metric"] == metric]
        for i, model in enumerate(models):
            mine = [r for r in here if r["model"] == model]
            sel = sorted((int(r["block"]), float(r["value"])) for r in mine)
            undefined = sorted({str(r.get("note") or "undefined") for r in mine if math.isnan(float(r["value"]))})
            missing = missing or bool(undefined)
            label = model
            if sel and all(math.isnan(v) for _, v in sel):
                label = f"{model} (n/a: {'; '.join(n.removeprefix('undefined: ') for n in undefined)})"
                ax.plot([], [], marker="o", ms=3.5, color=PALETTE[i % len(PALETTE)], ls="none", label=label)
            elif sel:
                ax.plot(*zip(*sel, strict=True), marker="o", ms=3.5, color=PALETTE[i % len(PALETTE)], label=label,
                        zorder=2)
        chance: dict[int, list[float]] = {}
        for r in here:
            value = float(r.get("chance") or "nan")
            if math.isfinite(value):
                chance.setdefault(int(r["block"]), []).append(value)
        if metric == "ari" and not chance:
            chance = {b: [0.0] for b in range(1, blocks + 1)}
        if chance:
            xs = sorted(chance)
            lo, hi = [min(chance[b]) for b in xs], [max(chance[b]) for b in xs]
            ax.plot(xs, [sum(chance[b]) / len(chance[b]) for b in xs], color="grey", lw=1.0, ls="--", zorder=1)
            if max(h - v for h, v in zip(hi, lo, strict=True)) > 0:
                ax.fill_between(xs, lo, hi, color="grey", alpha=0.3, lw=0, zorder=1)
            chance_drawn = True
        ax.set_title(CLUSTER_REP_TITLES.get(rep, rep), fontsize=9)
        ax.set_xlabel("block", fontsize=8)
        block_axis(ax, blocks)
    axes[0, 0].set_ylabel(METRIC_TITLES.get(metric, metric), fontsize=8)
    figure_legend(fig, axes, CHANCE_LABELS.get(metric, "chance") if chance_drawn else None)
    things = "objects" if list(reps) == ["object"] else "images"
    counts = ", ".join(f"{text} {name}" for name, column in ((things, "images"), ("classes", "classes"))
                       if (text := _count(rows, column)))
    if counts:
        title += ("\n" if title else "") + counts
    if missing:
        title += ("\n" if title else "") + "gaps / n/a: undefined values (the table's note column says why)"
    if title:
        width = int(72 * fig.get_figwidth() / 6.5)
        fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.split("\n")), fontsize=10)
    return fig
