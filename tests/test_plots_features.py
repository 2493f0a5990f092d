"""vitscope.plots.features: the CKA and clustering figures, built from small hand-made arrays and
tables and checked by their labels, titles and legends (the NaN cases say why)."""

from __future__ import annotations

import numpy as np

from vitscope.features import cka as features
from vitscope.plots import features as feature_plots


def test_full_depth_labels_every_layernorm_point() -> None:
    cka = {"cls": np.full((4, 6), 0.5), "spatial": np.linspace(0, 1, 24).reshape(4, 6)}
    fig = feature_plots.full_depth(cka, "dino", "mae", title="Full-depth CKA, toy")
    cls, spatial = fig.axes[:2]
    assert [cls.get_title(), spatial.get_title()] == ["CLS token", "spatial tokens"]
    assert cls.get_xlabel() == "mae: LayerNorm output (block.n1 / n2)" and cls.get_ylabel() == "dino: LayerNorm output"
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
    assert [t.get_text() for t in spatial.get_legend().get_texts()] == ["dino", "mae"]
    np.testing.assert_allclose(cls.get_lines()[0].get_ydata(), [0.2, 0.4, 0.6])
    assert any(list(line.get_ydata()) == [0, 0] and line.get_linestyle() == "--" for line in cls.get_lines())
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
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["one (n/a: 1 class)", "two"] and "undefined" in fig._suptitle.get_text()
