"""Figure of the training runs (docs/demo.md): loss against step, a panel per model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from .common import PALETTE, plt

YLABELS = {
    "fs": "cross-entropy",
    "contrastive": "InfoNCE (2 tau CE, symmetric)",
    "mae": "masked-patch MSE (normalized pixels)",
}


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` steps (shorter at the start)."""
    csum = np.cumsum(np.insert(values.astype(np.float64), 0, 0.0))
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)


def loss_curves(curves: Mapping[str, Sequence[Mapping[str, str]]]) -> Figure:
    """Panels of loss against step (raw, and a moving average over 1/20 of the run) per model.

    ``curves``: model -> rows of its loss table (model, objective, step, loss, lr). A model
    trained for no steps (objective random) gets a panel saying so.
    """
    models = list(curves)
    fig, axes = plt.subplots(1, len(models), figsize=(0.4 + 2.8 * len(models), 2.6), squeeze=False,
                             layout="constrained")
    for i, model in enumerate(models):
        ax = axes[0, i]
        rows = curves[model]
        if not rows:
            ax.text(0.5, 0.5, "untrained\n(the initialisation)", ha="center", va="center", transform=ax.transAxes,
                    fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(model, fontsize=9)
            continue
        steps = np.array([int(r["step"]) for r in rows])
        loss = np.array([float(r["loss"]) for r in rows])
        colour = PALETTE[i % len(PALETTE)]
        ax.plot(steps, loss, color=colour, alpha=0.3, lw=0.8)
        ax.plot(steps, smooth(loss, max(1, steps.size // 20)), color=colour, lw=1.6)
        objective = rows[0]["objective"]
        ax.set_title(model if model == objective else f"{model} ({objective})", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(YLABELS.get(objective, "loss"), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Training loss on the demo's synthetic images", fontsize=10)
    return fig
