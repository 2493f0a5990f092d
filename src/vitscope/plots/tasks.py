"""Figures of the downstream tasks (docs/downstream.md): score against block, a line per model.

k-NN: top-1 and top-5 accuracy (%) per k; retrieval: mAP and mP@10 per protocol
(Easy, Medium, Hard); SPair-71k: PCK (%) per alpha; DAVIS: J&F, J and F, means over
objects (recall and decay are in the tables). Functions take tidy rows
(vitscope.tasks.knn.COLUMNS, vitscope.tasks.retrieval.COLUMNS,
vitscope.tasks.spair.run.COLUMNS, vitscope.tasks.davis.evaluation.COLUMNS) and return figures;
:func:`vitscope.plots.common.save` writes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib
from matplotlib.figure import Figure

from .common import PALETTE, plt

LAYOUTS = {
    # task: (panel column, its label, rows: (metric, y label, scale))
    "knn": ("k", "k = {}", (("top1", "top-1 accuracy (%)", 100.0), ("top5", "top-5 accuracy (%)", 100.0))),
    "retrieval": ("protocol", "{} protocol", (("mAP", "mAP", 1.0), ("mP@10", "mP@10", 1.0))),
    "spair": ("alpha", "alpha = {}", (("PCK", "PCK (%)", 100.0),)),
    "davis": ("measure", "{}", (("mean", "mean over objects", 1.0),)),
}
TITLES = {
    "knn": "Weighted k-NN (T = 0.07) on {}: CLS token of each block",
    "retrieval": "Retrieval on {} (L2-normalised CLS token, {} queries)",
    "spair": "Keypoint transfer on {}: PCK, mean over categories (spatial tokens of each block)",
    "davis": "DAVIS label propagation on {}: spatial tokens of each block",
}


def _panels(rows: Sequence[Mapping[str, str]], column: str) -> list[str]:
    values = list(dict.fromkeys(r[column] for r in rows))
    if column == "k":
        return sorted(values, key=int)
    if column == "alpha":
        return sorted(values, key=float, reverse=True)
    order = ("easy", "medium", "hard")
    return sorted(values, key=lambda v: order.index(v) if v in order else len(order))


def by_block(rows: Sequence[Mapping[str, str]], task: str, models: Sequence[str], dataset: str) -> Figure:
    """Panels (metric rows x k or protocol columns) of score against block (1-indexed), a line per model.

    Undefined (NaN) values are gaps; a model with no defined value at all is listed in the
    legend as "model (n/a: reason)" from the rows' ``note``, and the title says values are missing.
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
    fig, axes = plt.subplots(
        len(metrics), len(panels), figsize=(0.6 + 2.9 * len(panels), 0.5 + 2.5 * len(metrics)), squeeze=False,
        sharex=True, sharey="row", layout="constrained",
    )
    blocks = max((int(r["block"]) for r in rows), default=1)
    for i, (metric, ylabel, scale) in enumerate(metrics):
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            for m, model in enumerate(models):
                sel = sorted(
                    (int(r["block"]), float(r["value"]) * scale)
                    for r in rows
                    if r["model"] == model and r["metric"] == metric and r[column] == panel
                )
                if sel:
                    ax.plot(*zip(*sel, strict=True), marker="o", ms=3.5, color=PALETTE[m % len(PALETTE)],
                            label=labels_of[model])
            if i == 0:
                ax.set_title(panel_label.format(panel.capitalize() if column == "protocol" else panel), fontsize=9)
            if i == len(metrics) - 1:
                ax.set_xlabel("block", fontsize=8)
            if j == 0:
                ax.set_ylabel(ylabel, fontsize=8)
            if blocks <= 16:
                ax.set_xticks(range(1, blocks + 1))
            else:
                ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=7, frameon=False)
    queries = rows[0].get("queries", "") if rows else ""
    title = TITLES[task].format(dataset, queries)
    if missing:
        title += "\ngaps / n/a: undefined values (the table's note column says why)"
    fig.suptitle(title, fontsize=10)
    return fig
