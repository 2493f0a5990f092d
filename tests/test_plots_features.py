"""vitscope.plots.features: the CKA and clustering figures, built from small hand-made arrays and
tables and checked by their labels, titles and legends (the NaN cases say why)."""

from __future__ import annotations

import numpy as np
import pytest

from vitscope.features import cka as features
from vitscope.plots import features as feature_plots


def test_full_depth_labels_every_layernorm_point() -> None:
    cka = {"cls": np.full((4, 6), 0.5), "spatial": np.linspace(0, 1, 24).reshape(4, 6)}
    fig = feature_plots.full_depth(cka, "dino", "mae", title="Full-depth CKA, toy")
    cls, spatial = fig.axes[:2]
    assert [cls.get_title(), spatial.get_title()] == ["CLS token", "spatial tokens"]
    assert fig.get_supxlabel() == "mae: LayerNorm output (block.n1 / block.n2)"
    assert cls.get_ylabel() == "dino: LayerNorm output" and spatial.get_ylabel() == ""
    assert [t.get_text() for t in cls.get_yticklabels()] == ["1.n1", "1.n2", "2.n1", "2.n2"]
    assert [t.get_text() for t in cls.get_xticklabels()][-1] == "3.n2"
    assert fig.axes[2].get_ylabel() == "linear CKA (minibatch, unbiased HSIC)"  # the shared colour bar
    assert fig._suptitle.get_text() == "Full-depth CKA, toy"  # nothing undefined: no grey note


def test_full_depth_says_what_grey_means() -> None:
    values = np.full((2, 2), 0.5)
    values[0, 0] = np.nan
    fig = feature_plots.full_depth({"cls": values}, "a", "b", title="t")
    assert fig._suptitle.get_text() == "t\ngrey: undefined (features constant over images, e.g. CLS at 1.n1)"


def test_last_layer_prints_every_pair() -> None:
    matrix = np.array([[[1.0, 0.25], [0.25, 1.0]]])
    fig = feature_plots.last_layer(matrix, ["dino", "mae"], ["all"], title="last")
    ax = fig.axes[0]
    assert ax.get_title() == "all tokens"
    assert [t.get_text() for t in ax.texts] == ["1.00", "0.25", "0.25", "1.00"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["dino", "mae"]
    assert fig._suptitle.get_text() == "last"


def test_clustering_panels_and_chance_line() -> None:
    rows = [{"model": m, "block": str(b), "representation": rep, "metric": "ari", "value": str(v * b), "note": ""}
            for m, v in (("dino", 0.2), ("mae", 0.1)) for rep in ("cls", "spatial") for b in (1, 2, 3)]
    fig = feature_plots.clustering(rows, "ari", ["dino", "mae"], title="Clustering, toy")
    cls, spatial = fig.axes
    assert [cls.get_title(), spatial.get_title()] == ["CLS token", "mean of spatial tokens"]
    assert cls.get_ylabel() == "ARI" and cls.get_xlabel() == "block"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["dino", "mae", "chance: 0 (random clustering)"]
    np.testing.assert_allclose(cls.get_lines()[0].get_ydata(), [0.2, 0.4, 0.6])
    assert any(set(line.get_ydata()) == {0} and line.get_linestyle() == "--" for line in cls.get_lines())
    assert fig._suptitle.get_text() == "Clustering, toy"


def test_undefined_cka_rows_carry_a_note_and_figures_label_the_gap(caplog) -> None:
    """CKA at a constant point is NaN with note "undefined: constant features" in the tidy
    rows and a log warning; the last-layer figure writes "n/a" in the cell and says why."""
    from vitscope.plots import features as feature_plots

    grid = np.array([[np.nan, 0.5], [0.25, 0.75]])
    arrays = {f"blocks_{rep}": grid for rep in ("cls", "spatial", "all")}
    with caplog.at_level("WARNING", logger="vitscope.features.cka"):
        rows = features.cka_rows(arrays, "a", "b", "blocks")
    assert [r["note"] for r in rows[:4]] == [features.CONSTANT_NOTE, "", "", ""]
    assert "3 of 12 values are NaN (undefined: constant features)" in caplog.text
    last = features.last_layer_rows({("a", "b"): {f"blocks_{rep}": grid[:1, :1] for rep in ("cls", "spatial", "all")}})
    assert all(r["note"] == features.CONSTANT_NOTE for r in last)
    fig = feature_plots.last_layer(np.full((1, 2, 2), np.nan), ["a", "b"], ["cls"], title="t")
    assert "n/a" in [t.get_text() for t in fig.axes[0].texts] and "undefined" in fig._suptitle.get_text()


def test_clustering_figure_names_an_undefined_model() -> None:
    from vitscope.plots import features as feature_plots

    rows = [{"model": "one", "block": str(b), "representation": "cls", "metric": "nmi", "value": "nan",
             "note": "undefined: 1 class"} for b in (1, 2)]
    rows += [{"model": "two", "block": str(b), "representation": "cls", "metric": "nmi", "value": "0.5", "note": ""}
             for b in (1, 2)]
    fig = feature_plots.clustering(rows, "nmi", ["one", "two"], reps=("cls",), title="t")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["one (n/a: 1 class)", "two"] and "undefined" in fig._suptitle.get_text()


# --------------------------------------------------------------------------- chance and text

from vitscope.features import clustering as clustering_module  # noqa: E402
from vitscope.plots.common import text_problems  # noqa: E402

LONG = ["fs", "contrastive", "moco_v3_vitb16", "dino_vitb16", "mae_vitb16", "beit_vitb16", "random"]


def test_full_depth_of_the_study_has_clean_text() -> None:
    """ViT-B/16 pairs (24 LayerNorm points) with long model names, and a 4-block pair."""
    values = np.random.default_rng(0).uniform(size=(24, 24))
    values[0] = np.nan
    for a, b, points in (("moco_v3_vitb16", "contrastive", 24), ("fs", "contrastive", 8)):
        cka = {rep: values[:points, :points] for rep in ("cls", "spatial", "all")}
        fig = feature_plots.full_depth(cka, a, b, title=f"Full-depth CKA, imagenet: {a} (rows) vs {b} (columns), "
                                                        "5000 images in minibatches of 64")
        assert text_problems(fig) == [], (a, b)
        assert all(t.get_fontsize() >= 7 for t in fig.axes[0].get_xticklabels())


def test_last_layer_of_seven_models_has_clean_text() -> None:
    matrix = np.random.default_rng(1).uniform(size=(3, 7, 7))
    matrix[0, 0, 1] = np.nan
    fig = feature_plots.last_layer(matrix, LONG, ["cls", "spatial", "all"], title="CKA of the last block outputs")
    assert text_problems(fig) == []


def test_clustering_draws_the_rows_chance_and_counts() -> None:
    """Purity with chance 0.3 at block 1 and 0.3 / 0.4 at block 2 (two models): a band from the lowest
    to the highest; the title says how many images and classes were clustered."""
    rows = [{"model": m, "block": str(b), "representation": "cls", "metric": "purity", "value": "0.8",
             "note": "", "chance": str(c), "images": "72", "classes": "6", "clusters": "6"}
            for m, chance in (("fs", (0.3, 0.3)), ("contrastive", (0.3, 0.4)))
            for b, c in zip((1, 2), chance, strict=True)]
    fig = feature_plots.clustering(rows, "purity", ["fs", "contrastive"], reps=("cls",), title="t")
    band = fig.axes[0].collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(0.3) and band[:, 1].max() == pytest.approx(0.4)
    mean = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert len(mean) == 1 and list(mean[0].get_ydata()) == pytest.approx([0.3, 0.35])
    assert fig._suptitle.get_text() == "t\n72 images, 6 classes"
    assert fig.legends[0].get_texts()[-1].get_text().startswith("chance: random clustering")


def test_clustering_of_the_study_has_clean_text() -> None:
    """7 long-named models, 12 blocks, real rows (chance from the analysis), one model undefined."""
    rng = np.random.default_rng(2)
    labels = np.arange(60) % 5
    rows = []
    for m in LONG[:-1]:
        x = rng.normal(size=(60, 12, 4)) + labels[:, None, None]
        rows += clustering_module.clustering_rows({"cls": x, "spatial": x[..., ::-1]}, labels, m, seed=0, n_init=1)
    rows += clustering_module.clustering_rows({"cls": x, "spatial": x}, np.zeros(60, np.int64), "random", 0, 1)
    text = [{k: str(v) for k, v in r.items()} for r in rows]
    for metric in ("purity", "nmi", "ari"):
        fig = feature_plots.clustering([r for r in text if r["metric"] == metric], metric, LONG,
                                       title=f"KMeans clustering of imagenet50 (k = number of classes): {metric}")
        assert text_problems(fig) == [], metric
        assert any(line.get_linestyle() == "--" for line in fig.axes[0].get_lines())
