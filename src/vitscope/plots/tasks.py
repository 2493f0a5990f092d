"""Figures of the downstream tasks (docs/downstream.md): score against block, a line per model.

k-NN: top-1 and top-5 accuracy (%) per k; retrieval: mAP and mP@10 per protocol
(Easy, Medium, Hard); SPair-71k: PCK (%) per alpha; DAVIS: J&F, J and F, means over
objects (recall and decay are in the tables). Functions take tidy rows
(vitscope.tasks.knn.COLUMNS, vitscope.tasks.retrieval.COLUMNS,
vitscope.tasks.spair.run.COLUMNS, vitscope.tasks.davis.evaluation.COLUMNS) and return figures;
:func:`vitscope.plots.common.save` writes them.

Where the rows carry a ``chance`` column (k-NN, SPair) each panel has the chance level as a
dashed grey line (one per model, in its colour, where the models' chance levels differ), and
the title states the counts the scores rest on (the rows' count columns). A k-NN top-5 panel
whose metric counts all classes but at most one (near-trivial: chance >= (C - 1) / C) is not
drawn, nor is one that counts a single class (k = 1: the same as top-1); the panel says
which, and a top-5 row with no panel left is dropped, the title saying why.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .common import PALETTE, block_axis, figure_legend, plt

Rows = Sequence[Mapping[str, str]]

LAYOUTS = {
    # task: (panel column, its label, rows: (metric, y label, scale))
    "knn": ("k", "k = {}", (("top1", "top-1 accuracy (%)", 100.0), ("top5", "top-5 accuracy (%)", 100.0))),
    "retrieval": ("protocol", "{} protocol", (("mAP", "mAP", 1.0), ("mP@10", "mP@10", 1.0))),
    "spair": ("alpha", "alpha = {}", (("PCK", "PCK (%)", 100.0),)),
    "davis": ("measure", "{}", (("mean", "mean over objects", 1.0),)),
}
TITLES = {
    "knn": "Weighted k-NN on {dataset}: CLS token of each block",
    "retrieval": "Retrieval on {dataset}: L2-normalised CLS token of each block, {queries} queries",
    "spair": "Keypoint transfer on {dataset}: PCK, mean over categories (spatial tokens of each block)",
    "davis": "DAVIS label propagation on {dataset}: spatial tokens of each block",
}
#: the counts each task's title states: (row column, how to say it)
COUNTS = {
    "knn": (("queries", "{} queries"), ("bank", "memory bank of {} images"), ("classes", "{} classes")),
    "retrieval": (("database", "database of {} images"),),
    "spair": (("pairs", "{} pairs"), ("keypoints", "{} keypoints"), ("categories", "{} categories")),
    "davis": (("sequences", "{} sequences"), ("frames", "{} frames scored"), ("objects", "{} objects")),
}
CHANCE = {
    "knn": "chance: a uniformly random class ranking",
    "spair": "chance: a uniformly random target pixel",
}


def _panels(rows: Rows, column: str) -> list[str]:
    values = list(dict.fromkeys(r[column] for r in rows))
    if column == "k":
        return sorted(values, key=int)
    if column == "alpha":
        return sorted(values, key=float, reverse=True)
    order = ("easy", "medium", "hard")
    return sorted(values, key=lambda v: order.index(v) if v in order else len(order))


def count_text(rows: Rows, column: str) -> str:
    """The value of ``column`` over ``rows`` as text: "24", or "20-24" where the rows differ, "" if absent."""
    values = sorted({int(float(r[column])) for r in rows if str(r.get(column, "")).strip() not in ("", "nan")})
    if not values:
        return ""
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def counts_line(rows: Rows, task: str) -> str:
    """What the scores rest on, from the rows' count columns (:data:`COUNTS`), e.g. "24 queries, ..."."""
    parts = [say.format(text) for column, say in COUNTS[task] if (text := count_text(rows, column))]
    return ", ".join(parts)


def near_trivial(rows: Rows) -> bool:
    """Whether k-NN rows (one top-5 panel) count all classes but at most one: counted >= classes - 1
    with counted > 1 (a top-5 that cannot miss much; with counted = 1 it equals top-1)."""
    pairs = {(int(r["counted"]), int(r["classes"])) for r in rows if r.get("counted") not in (None, "")}
    return bool(pairs) and all(1 < counted >= classes - 1 for counted, classes in pairs)


def _chance(ax: Axes, rows: Rows, models: Sequence[str], scale: float) -> bool:
    """Draw the rows' chance level (dashed): one grey line, or one per model where they differ."""
    per_model = {}
    for m, model in enumerate(models):
        sel = sorted((int(r["block"]), float(r["chance"]) * scale) for r in rows
                     if r["model"] == model and str(r.get("chance", "")).strip() not in ("", "nan"))
        if sel:
            per_model[m] = sel
    if not per_model:
        return False
    levels = {round(v, 9) for sel in per_model.values() for _, v in sel}
    if len(levels) == 1:
        ax.axhline(levels.pop(), color="grey", lw=1.0, ls="--", zorder=1)
    else:
        for m, sel in per_model.items():
            ax.plot(*zip(*sel, strict=True), color=PALETTE[m % len(PALETTE)], lw=0.9, ls="--", zorder=1)
    return True


def by_block(rows: Rows, task: str, models: Sequence[str], dataset: str) -> Figure:
    """Panels (metric rows x k or protocol columns) of score against block (1-indexed), a line per model.

    Undefined (NaN) values are gaps; a model with no defined value at all is listed in the
    legend as "model (n/a: reason)" from the rows' ``note``, and the title says values are missing.
    Chance lines, counts and near-trivial k-NN top-5 panels: see the module docstring.
    """
    column, panel_label, metrics = LAYOUTS[task]
    labels_of: dict[str, str] = {}
    missing = False
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        undefined = sorted({str(r.get("note") or "undefined").removeprefix("undefined:").strip()
                            for r in mine if math.isnan(float(r["value"]))})
        missing = missing or bool(undefined)
        every = bool(mine) and all(math.isnan(float(r["value"])) for r in mine)
        labels_of[model] = f"{model} (n/a: {'; '.join(undefined)})" if every else model
    panels = _panels(rows, column)
    notes = []
    shown = []
    for metric, ylabel, scale in metrics:
        here = {p: [r for r in rows if r["metric"] == metric and r[column] == p] for p in panels}
        trivial = {p for p in panels if metric == "top5" and near_trivial(here[p])}
        single = {p for p in panels if metric == "top5" and {r.get("counted") for r in here[p]} == {"1"}}
        if trivial and len(trivial | single) == len(panels):
            sample = next(r for r in rows if r["metric"] == metric)
            lowest = min(float(r["chance"]) for p in trivial for r in here[p])
            notes.append(f"top-5 not shown: it counts at least {int(sample['classes']) - 1} of the "
                         f"{sample['classes']} classes at every k (near-trivial, chance {100 * lowest:.0f} % or more)"
                         + (" or one class (the same as top-1)" if single else ""))
            continue
        shown.append((metric, ylabel, scale, trivial, single))
    fig, axes = plt.subplots(
        len(shown), len(panels), figsize=(0.6 + 2.9 * len(panels), 0.9 + 2.5 * len(shown)), squeeze=False,
        sharex=True, sharey="row", layout="constrained",
    )
    blocks = max((int(r["block"]) for r in rows), default=1)
    chance_drawn = False
    for i, (metric, ylabel, scale, trivial, single) in enumerate(shown):
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            mine = [r for r in rows if r["metric"] == metric and r[column] == panel]
            title = panel_label.format(panel.capitalize() if column == "protocol" else panel)
            if task == "retrieval" and (evaluated := count_text(mine, "evaluated")):
                title += f" ({evaluated} queries)"
            if i == 0 or trivial or single:
                ax.set_title(title, fontsize=9)
            if panel in trivial:
                sample = mine[0]
                ax.text(0.5, 0.5, f"not shown: near-trivial\n(counts {sample['counted']} of {sample['classes']} "
                        f"classes,\nchance {100 * float(sample['chance']):.0f} %)", ha="center", va="center",
                        transform=ax.transAxes, fontsize=8, color="dimgrey")
            elif panel in single:
                ax.text(0.5, 0.5, f"not shown: the same as top-1\n(k = {panel} counts one class)", ha="center",
                        va="center", transform=ax.transAxes, fontsize=8, color="dimgrey")
            else:
                for m, model in enumerate(models):
                    sel = sorted((int(r["block"]), float(r["value"]) * scale) for r in mine if r["model"] == model)
                    if sel:
                        ax.plot(*zip(*sel, strict=True), marker="o", ms=3.5, color=PALETTE[m % len(PALETTE)],
                                label=labels_of[model], zorder=2)
                chance_drawn = _chance(ax, mine, models, scale) or chance_drawn
            if i == len(shown) - 1:
                ax.set_xlabel("block", fontsize=8)
            if j == 0:
                ax.set_ylabel(ylabel, fontsize=8)
            block_axis(ax, blocks)
    figure_legend(fig, axes, CHANCE[task].replace(": ", ":\n", 1) if chance_drawn else None)
    queries = rows[0].get("queries", "") if rows else ""
    title = TITLES[task].format(dataset=dataset, queries=queries)
    if counts := counts_line(rows, task):
        title += f"\n{counts}"
    title += "".join(f"\n{note}" for note in notes)
    if missing:
        title += "\ngaps / n/a: undefined values (the table's note column says why)"
    width = int(72 * fig.get_figwidth() / 6.5)  # characters of 10 pt text that fit the figure's width
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.split("\n")), fontsize=10)
    return fig
