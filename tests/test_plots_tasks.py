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
    assert fig._suptitle.get_text() == "Retrieval on roxford5k: L2-normalised CLS token of each block, 70 queries"
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [0.3, 0.6])


def test_knn_scales_to_percent_and_sorts_k() -> None:
    rows = [{"model": "dino", "block": str(b), "k": k, "metric": metric, "value": "0.5", "note": ""}
            for k in ("20", "10") for metric in ("top1", "top5") for b in (1, 2)]
    fig = task_plots.by_block(rows, "knn", ["dino"], "toy")
    assert [ax.get_title() for ax in fig.axes[:2]] == ["k = 10", "k = 20"]
    assert [fig.axes[i].get_ylabel() for i in (0, 2)] == ["top-1 accuracy (%)", "top-5 accuracy (%)"]
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), [50.0, 50.0])
    assert fig._suptitle.get_text() == "Weighted k-NN on toy: CLS token of each block"


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
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["one (n/a: 1 class in the memory bank)", "two"]
    assert "undefined" in fig._suptitle.get_text()


from vitscope.plots.common import text_problems  # noqa: E402

LONG = ["fs", "contrastive", "moco_v3_vitb16", "dino_vitb16", "mae_vitb16", "beit_vitb16", "random"]


def knn_rows(models: list[str], classes: int, ks: tuple[int, ...], blocks: int = 12) -> list[dict[str, str]]:
    """Rows as knn.block_rows writes them (read back as strings) for a balanced bank of 4 images per class."""
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(4 * classes, blocks, 6)), rng.normal(size=(24, blocks, 6))
    rows = []
    for model in models:
        rows += knn.block_rows(train, np.arange(4 * classes) % classes, test, np.arange(24) % classes, model, ks=ks)
    return [{k: str(v) for k, v in r.items()} for r in rows]


def test_knn_chance_line_counts_and_a_near_trivial_top5() -> None:
    """6 classes, k = 5, 10, 20: top-1 chance 1/6 (16.7 %); top-5 counts 5 of 6 classes at every k,
    near-trivial, so its row is dropped and the title says why; the counts are in the title."""
    fig = task_plots.by_block(knn_rows(["fs", "contrastive"], 6, (5, 10, 20), blocks=4), "knn",
                              ["fs", "contrastive"], "demo_val")
    assert len(fig.axes) == 3 and [ax.get_ylabel() for ax in fig.axes[:1]] == ["top-1 accuracy (%)"]
    dashed = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_ydata()) == pytest.approx([100 / 6] * 2)
    title = " ".join(fig._suptitle.get_text().split())  # lines wrapped to the figure's width
    assert "24 queries, memory bank of 24 images, 6 classes" in title
    assert "top-5 not shown: it counts at least 5 of the 6 classes at every k (near-trivial, chance 83 % or more)" \
        in title
    assert "chance:\na uniformly random class ranking" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert text_problems(fig) == []


def test_knn_top5_kept_where_informative_and_marked_where_not() -> None:
    """20 classes, k = 1, 3 and 10: top-5 at k = 1 counts one class (the same as top-1: marked), at
    k = 3 three (drawn, chance 3/20), at k = 10 five (drawn, chance 5/20); 3 classes and k = 1, 3:
    top-5 is marked at k = 1 and near-trivial at k = 3, so the row is dropped."""
    fig = task_plots.by_block(knn_rows(["fs"], 20, (1, 3, 10), blocks=3), "knn", ["fs"], "toy")
    top5 = fig.axes[3:]
    assert [t.get_text() for t in top5[0].texts] == ["not shown: the same as top-1\n(k = 1 counts one class)"]
    assert [[line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"] for ax in top5[1:]] == \
        [pytest.approx([15.0]), pytest.approx([25.0])]
    fig = task_plots.by_block(knn_rows(["fs"], 3, (1, 3), blocks=3), "knn", ["fs"], "toy")
    assert len(fig.axes) == 2 and "top-5 not shown" in fig._suptitle.get_text()
    fig = task_plots.by_block(knn_rows(["fs"], 6, (3, 20), blocks=3), "knn", ["fs"], "toy")  # k = 20: 5 of 6
    marked = "not shown: near-trivial\n(counts 5 of 6 classes,\nchance 83 %)"
    assert [t.get_text() for t in fig.axes[3].texts] == [marked]
    assert [line.get_ydata()[0] for line in fig.axes[2].get_lines() if line.get_linestyle() == "--"] == \
        pytest.approx([50.0])


def test_study_sized_figures_have_clean_text() -> None:
    """7 models with long names, 12 blocks, NaN values (one model on a one-class bank)."""
    rows = knn_rows(LONG[:-1], 50, (10, 20, 100, 200))
    rows += [{k: str(v) for k, v in r.items()} for r in knn.block_rows(
        np.ones((8, 12, 4)), np.zeros(8, np.int64), np.ones((3, 12, 4)), np.zeros(3, np.int64), "random",
        ks=(10, 20, 100, 200))]
    fig = task_plots.by_block(rows, "knn", LONG, "imagenet_val")
    assert len(fig.axes) == 8 and text_problems(fig) == []
    ret = [r | {"evaluated": "70", "database": "4993"} for m in LONG for r in retrieval_rows(m, 0.05)]
    for b in range(3, 13):
        ret += [r | {"block": str(b), "evaluated": "70", "database": "4993"} for m in LONG
                for r in retrieval_rows(m, 0.05) if r["block"] == "1"]
    fig = task_plots.by_block(ret, "retrieval", LONG, "roxford5k")
    assert "database of 4993 images" in fig._suptitle.get_text() and fig.axes[0].get_title() == \
        "Easy protocol (70 queries)"
    assert text_problems(fig) == []


def test_spair_chance_line_and_counts() -> None:
    rows = [{"model": m, "block": str(b), "metric": "PCK", "alpha": a, "categories": "18", "keypoints": "3600",
             "value": "0.2", "note": "", "chance": str(c), "pairs": "360"}
            for m in LONG for b in range(1, 13) for a, c in (("0.1", 0.02), ("0.05", 0.005), ("0.01", 0.0002))]
    fig = task_plots.by_block(rows, "spair", LONG, "spair71k")
    dashed = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert list(dashed[0].get_ydata()) == pytest.approx([2.0, 2.0])
    assert "360 pairs, 3600 keypoints, 18 categories" in fig._suptitle.get_text()
    assert text_problems(fig) == []


def test_davis_counts() -> None:
    rows = [{"model": m, "block": str(b), "measure": ms, "metric": "mean", "objects": "59", "value": "0.5",
             "sequences": "30", "frames": "1939"} for m in LONG for b in range(1, 13) for ms in ("J&F", "J", "F")]
    fig = task_plots.by_block(rows, "davis", LONG, "davis2017")
    assert "30 sequences, 1939 frames scored, 59 objects" in fig._suptitle.get_text()
    assert text_problems(fig) == []
