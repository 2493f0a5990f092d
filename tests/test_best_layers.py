"""The best-layer table ("No single winner"): best block per model and task, CSV / Markdown / LaTeX."""

from __future__ import annotations

import math

from vitscope.tasks import best_layers as table


def rows_of(model, values, **extra):
    return [{"model": model, "block": b + 1, "value": v, **extra} for b, v in enumerate(values)]


KNN = table.Task("k-NN top-1", {"metric": "top1", "k": 20}, scale=100.0)
RET = table.Task("ROxford5k (M) mAP", {"metric": "mAP", "protocol": "medium"})


def results():
    knn = rows_of("fs", [0.1, 0.8379, 0.5], metric="top1", k="20") + rows_of("fs", [0.9, 0.9, 0.9], metric="top1",
                                                                              k="10")
    knn += rows_of("mae", [0.2, 0.4519, 0.4519], metric="top1", k="20")  # tie: the lower block wins
    ret = rows_of("fs", [0.1, 0.2, 0.45], metric="mAP", protocol="medium")
    ret += rows_of("mae", [math.nan, 0.15, 0.1], metric="mAP", protocol="medium")  # NaN never wins
    ret += rows_of("mae", [0.99, 0.99, 0.99], metric="mAP", protocol="hard")
    return {KNN: knn, RET: ret}


def test_best_block_per_model_and_task() -> None:
    rows = table.best_layer_rows(results(), ["fs", "mae", "random"])
    found = {(r["model"], r["task"]): (r["block"], round(r["score"], 4)) for r in rows}
    assert found == {
        ("fs", "k-NN top-1"): (2, 83.79),
        ("mae", "k-NN top-1"): (2, 45.19),
        ("fs", "ROxford5k (M) mAP"): (3, 0.45),
        ("mae", "ROxford5k (M) mAP"): (2, 0.15),
    }
    assert [r["model"] for r in rows] == ["fs", "fs", "mae", "mae"]


def test_markdown_and_latex_layout() -> None:
    models = ["fs", "mae", "random"]
    rows = table.best_layer_rows(results(), models)
    md = table.markdown(rows, [KNN, RET], models).splitlines()
    assert md[0] == "| model | k-NN top-1 | ROxford5k (M) mAP |"
    assert md[2] == "| fs | 83.79 (2) | 0.45 (3) |"
    assert md[4] == "| random | - | - |"
    tex = table.latex(rows, [KNN, RET], models)
    assert r"\begin{tabular}{lcc}" in tex and r"fs & 83.79 (2) & 0.45 (3) \\" in tex
    assert r"\toprule" in tex and tex.count(r"\\") == 4


def test_latex_escapes_labels() -> None:
    task = table.Task("a_b & 5%", {})
    tex = table.latex([], [task], ["m_1"])
    assert r"a\_b \& 5\%" in tex and r"m\_1 & - \\" in tex


NMI = table.Task("NMI", {"metric": "nmi", "representation": "cls"}, scale=100.0, digits=1)


def test_undefined_values_are_not_ranked_and_say_why(caplog) -> None:
    """A model whose every value is undefined (NaN, note "undefined: 1 class") gets "n/a (1 class)"
    and a CSV row with the note, not a score; NaN blocks of another model are skipped."""
    nmi = rows_of("single", [math.nan, math.nan], metric="nmi", representation="cls", note="undefined: 1 class")
    nmi += rows_of("fs", [0.25, math.nan], metric="nmi", representation="cls", note="")
    nmi += rows_of("bare", [math.nan], metric="nmi", representation="cls")  # NaN with no note
    models = ["single", "fs", "bare", "none"]
    with caplog.at_level("WARNING", logger="vitscope.tasks.best_layers"):
        rows = table.best_layer_rows({NMI: nmi}, models)
    assert "single, NMI is n/a (1 class)" in caplog.text
    found = {r["model"]: r for r in rows}
    assert set(found) == {"single", "fs", "bare"}
    assert found["single"]["block"] == "" and math.isnan(found["single"]["score"])
    assert found["single"]["note"] == "undefined: 1 class" and found["bare"]["note"] == "undefined: undefined"
    assert (found["fs"]["block"], found["fs"]["score"], found["fs"]["note"]) == (1, 25.0, "")
    md = table.markdown(rows, [NMI], models).splitlines()
    assert md[2:] == ["| single | n/a (1 class) |", "| fs | 25.0 (1) |", "| bare | n/a (undefined) |", "| none | - |"]
    assert r"single & n/a (1 class) \\" in table.latex(rows, [NMI], models)
    assert set(rows[0]) == set(table.COLUMNS)


def test_undefined_rows_read_back_from_csv(tmp_path) -> None:
    """The best-layer script reads the metric tables as CSV text: 'nan' and the note survive."""
    from vitscope.io import tables

    path = tmp_path / "clustering.csv"
    nmi = rows_of("single", [math.nan], metric="nmi", representation="cls", note="undefined: 1 class")
    tables.write_csv(nmi, path)
    rows = table.best_layer_rows({NMI: tables.read_csv(path)}, ["single"])
    assert table.markdown(rows, [NMI], ["single"]).splitlines()[2] == "| single | n/a (1 class) |"
    tables.write_csv(rows, tmp_path / "best.csv", columns=table.COLUMNS)
    assert tables.read_csv(tmp_path / "best.csv")[0]["note"] == "undefined: 1 class"
