"""vitscope.plots.tasks: score against block for every downstream task, built from small hand-made
tidy rows (strings, as read back from the CSV) and checked by panel titles, axis labels and legends."""

from __future__ import annotations

import numpy as np
import pytest

from vitscope.plots import tasks as task_plots
from vitscope.tasks import knn


def retrieval_rows(model: str, value: float, note: str = "") -> list[dict[str, str]]:
    return [{"model": model, "block": str(b), "protocol": p, "metric": metric, "value": str(value * b),
             "queries": "70", "note": note}
            for p in ("hard", "easy", "medium") for metric in ("mAP", "mP@10") for b in (1, 2)]


def test_retrieval_panels_in_protocol_order() -> None:
    rows = retrieval_rows("dino", 0.3) + retrieval_rows("mae", 0.1)
    fig = task_plots.by_block(rows, "retrieval", ["dino", "mae"], "roxford5k")
    top = fig.axes[:3]
    assert [ax.get_title() for ax in top] == ["Easy protocol", "Medium protocol", "Hard protocol"]
    assert [fig.axes[i].get_ylabel() for i in (0, 3)] == ["mAP", "mP@10"]
    assert [ax.get_xlabel() for ax in fig.axes[3:]] == ["block"] * 3
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["dino", "mae"]
    assert fig._suptitle.get_text() == "Retrieval on roxford5k (L2-normalised CLS token, 70 queries)"
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [0.3, 0.6])


def test_knn_scales_to_percent_and_sorts_k() -> None:
    rows = [{"model": "dino", "block": str(b), "k": k, "metric": metric, "value": "0.5", "note": ""}
            for k in ("20", "10") for metric in ("top1", "top5") for b in (1, 2)]
    fig = task_plots.by_block(rows, "knn", ["dino"], "toy")
    assert [ax.get_title() for ax in fig.axes[:2]] == ["k = 10", "k = 20"]
    assert [fig.axes[i].get_ylabel() for i in (0, 2)] == ["top-1 accuracy (%)", "top-5 accuracy (%)"]
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [50.0, 50.0])
    assert fig._suptitle.get_text() == "Weighted k-NN (T = 0.07) on toy: CLS token of each block"


@pytest.mark.parametrize(("task", "column", "panels", "title"), [
    ("spair", "alpha", ["0.05", "0.1"], ["alpha = 0.1", "alpha = 0.05"]),
    ("davis", "measure", ["J&F", "J"], ["J&F", "J"]),
])
def test_spair_and_davis_panels(task: str, column: str, panels: list[str], title: list[str]) -> None:
    metric = "PCK" if task == "spair" else "mean"
    rows = [{"model": "dino", "block": str(b), column: p, "metric": metric, "value": "0.5", "note": ""}
            for p in panels for b in (1, 2)]
    fig = task_plots.by_block(rows, task, ["dino"], "toy")
    assert [ax.get_title() for ax in fig.axes] == title


def test_a_nan_row_says_why_in_the_legend() -> None:
    rows = retrieval_rows("dino", 0.3) + retrieval_rows("mae", float("nan"), note="undefined: no positive image")
    fig = task_plots.by_block(rows, "retrieval", ["dino", "mae"], "roxford5k")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["dino", "mae (n/a: no positive image)"]
    assert fig._suptitle.get_text().endswith("\ngaps / n/a: undefined values (the table's note column says why)")


def test_downstream_figure_names_an_undefined_model() -> None:
    """The k-NN figure of a single-class bank is no silent blank: the legend says n/a and why."""
    from vitscope.plots import tasks as task_plots

    rng = np.random.default_rng(4)
    train, test = rng.normal(size=(12, 2, 4)), rng.normal(size=(4, 2, 4))
    rows = knn.block_rows(train, np.zeros(12, np.int64), test, np.zeros(4, np.int64), "one", ks=(1,))
    rows += knn.block_rows(train, np.arange(12) % 2, test, np.arange(4) % 2, "two", ks=(1,))
    text = [{k: str(v) for k, v in r.items()} for r in rows]  # as read back from the CSV
    fig = task_plots.by_block(text, "knn", ["one", "two"], "toy")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["one (n/a: 1 class in the memory bank)", "two"]
    assert "undefined" in fig._suptitle.get_text()
