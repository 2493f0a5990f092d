"""vitscope.plots.training: the loss curves of the demo's training runs, built from small hand-made
loss tables (strings, as read back from the CSV) and checked by titles, labels and lines."""

from __future__ import annotations

import numpy as np

from vitscope.plots import training


def loss_rows(model: str, objective: str, steps: int) -> list[dict[str, str]]:
    return [{"model": model, "objective": objective, "step": str(s), "loss": str(10.0 / (s + 1)), "lr": "0.001"}
            for s in range(steps)]


def test_smooth_is_a_trailing_mean() -> None:
    values = np.array([1.0, 3.0, 5.0, 7.0])
    np.testing.assert_allclose(training.smooth(values, 2), [1.0, 2.0, 4.0, 6.0])
    np.testing.assert_allclose(training.smooth(values, 1), values)
    np.testing.assert_allclose(training.smooth(values, 10), [1.0, 2.0, 3.0, 4.0])  # shorter at the start


def test_loss_curves_one_panel_per_model() -> None:
    curves = {"fs": loss_rows("fs", "fs", 40), "tiny_mae": loss_rows("tiny_mae", "mae", 40), "random": []}
    fig = training.loss_curves(curves)
    fs, mae, random = fig.axes
    assert [fs.get_title(), mae.get_title(), random.get_title()] == ["fs", "tiny_mae (mae)", "random"]
    assert fs.get_ylabel() == "cross-entropy" and mae.get_ylabel() == "masked-patch MSE (normalized pixels)"
    assert fs.get_xlabel() == "step"
    raw, smoothed = fs.get_lines()
    np.testing.assert_allclose(raw.get_ydata(), [10.0 / (s + 1) for s in range(40)])
    np.testing.assert_allclose(smoothed.get_ydata(), training.smooth(raw.get_ydata(), 2))  # 1/20 of 40 steps
    assert [t.get_text() for t in random.texts] == ["untrained\n(the initialisation)"]
    assert fig._suptitle.get_text() == "Training loss on the demo's synthetic images"


def test_an_unknown_objective_is_labelled_loss() -> None:
    fig = training.loss_curves({"m": loss_rows("m", "distill", 3)})
    assert fig.axes[0].get_ylabel() == "loss" and fig.axes[0].get_title() == "m (distill)"


def test_seven_long_named_models_have_clean_text() -> None:
    from vitscope.plots.common import text_problems

    names = ["fs", "contrastive", "moco_v3_vitb16", "dino_vitb16", "mae_vitb16", "beit_vitb16", "random"]
    objectives = ["fs", "contrastive", "contrastive", "contrastive", "mae", "mae", "random"]
    curves = {n: (loss_rows(n, o, 300) if o != "random" else []) for n, o in zip(names, objectives, strict=True)}
    assert text_problems(training.loss_curves(curves)) == []
