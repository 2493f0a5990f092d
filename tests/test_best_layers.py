"""The best-layer table ("No single winner"): best block per model and task, CSV / Markdown / LaTeX / HTML."""

from __future__ import annotations

import math

from vitscope.tasks import best_layers as table


def rows_of(model, values, **extra):
    return [{"model": model, "block": b + 1, "value": v, **extra} for b, v in enumerate(values)]


KNN = table.Task("k-NN top-1", {"metric": "top1", "k": 20}, scale=100.0, unit="%")
RET = table.Task("ROxford5k (M) mAP", {"metric": "mAP", "protocol": "medium"}, scale=100.0, unit="%",
                 legend=("(M): the Medium protocol of revisited Oxford and Paris.",))


def results():
    knn = rows_of("fs", [0.1, 0.8379, 0.5], metric="top1", k="20") + rows_of("fs", [0.9, 0.9, 0.9], metric="top1",
                                                                              k="10")
    knn += rows_of("mae", [0.2, 0.4519, 0.4519], metric="top1", k="20")  # tie: both blocks are listed
    ret = rows_of("fs", [0.1, 0.2, 0.45], metric="mAP", protocol="medium")
    ret += rows_of("mae", [math.nan, 0.15, 0.1], metric="mAP", protocol="medium")  # NaN never wins
    ret += rows_of("mae", [0.99, 0.99, 0.99], metric="mAP", protocol="hard")
    return {KNN: knn, RET: ret}


def test_best_block_per_model_and_task() -> None:
    rows = table.best_layer_rows(results(), ["fs", "mae", "random"])
    found = {(r["model"], r["task"]): (r["blocks"], round(r["score"], 4), r["tie"]) for r in rows}
    assert found == {
        ("fs", "k-NN top-1"): ("2", 83.79, False),
        ("mae", "k-NN top-1"): ("2;3", 45.19, True),  # a tie lists both blocks
        ("fs", "ROxford5k (M) mAP"): ("3", 45.0, False),
        ("mae", "ROxford5k (M) mAP"): ("2", 15.0, False),
    }
    assert [r["model"] for r in rows] == ["fs", "fs", "mae", "mae"]
    assert {r["unit"] for r in rows} == {"%"} and set(rows[0]) == set(table.COLUMNS)


def test_blocks_tie_when_equal_as_shown() -> None:
    """Ties are decided on the score the table shows (value x scale, rounded to digits)."""
    task = table.Task("t", scale=100.0, digits=2, unit="%")
    rows = rows_of("m", [0.45001, 0.44999, 0.4, 0.45004])  # 45.00, 45.00, 40.00, 45.00
    best = table.best_blocks(rows, task)["m"]
    assert best.blocks == (1, 2, 4) and best.tie and not best.all_blocks_tie
    assert best.value == 0.45004  # the highest value among the tied blocks
    three = table.Task("t", scale=100.0, digits=3, unit="%")
    assert table.best_blocks(rows, three)["m"].blocks == (4,)  # 45.004 is shown apart at 3 decimals
    flat = table.best_blocks(rows_of("m", [0.0] * 6 + [math.nan]), task)["m"]
    assert flat.blocks == (1, 2, 3, 4, 5, 6) and flat.all_blocks_tie  # the NaN block has no value to tie


def test_markdown_layout_units_ties_best_and_legend() -> None:
    models = ["fs", "mae", "random"]
    rows = table.best_layer_rows(results(), models)
    md = table.markdown(rows, [KNN, RET], models).splitlines()
    assert md[0] == "| model | k-NN top-1 (%) | ROxford5k (M) mAP (%) |"
    assert md[2] == "| fs | **83.79 (2)** | **45.00 (3)** |"
    assert md[3] == "| mae | 45.19 (tie: 2, 3) | 15.00 (2) |"
    assert md[4] == "| random | - | - |"
    legend = md[6:]
    assert legend[0] == "- Scores in % (fractions x 100), rounded to the decimals shown."
    assert "- (M): the Medium protocol of revisited Oxford and Paris." in legend
    assert any(line.startswith("- Bold: the best model") for line in legend)
    assert any(line.startswith("- tie: ") for line in legend)
    assert not any(line.startswith("- all blocks tie") for line in legend)  # no such cell


def test_a_column_where_every_block_ties_says_so() -> None:
    task = table.Task("flat", scale=100.0, unit="%")
    rows = table.best_layer_rows({task: rows_of("random", [0.0, 0.0, 0.0]) + rows_of("fs", [0.1, 0.3, 0.2])},
                                 ["fs", "random"])
    md = table.markdown(rows, [task], ["fs", "random"]).splitlines()
    assert md[2:4] == ["| fs | **30.00 (2)** |", "| random | 0.00 (all blocks tie) |"]
    assert any(line.startswith("- all blocks tie: ") for line in md)
    random = next(r for r in rows if r["model"] == "random")
    assert (random["blocks"], random["tie"], random["all_blocks_tie"], random["best_model"]) == (
        "1;2;3", True, True, False)


def test_models_equal_as_shown_are_all_best() -> None:
    task = table.Task("t", scale=100.0, unit="%")
    rows = table.best_layer_rows({task: rows_of("a", [0.50001]) + rows_of("b", [0.49999]) + rows_of("c", [0.4])},
                                 ["a", "b", "c"])
    assert [r["best_model"] for r in rows] == [True, True, False]
    flat = table.best_layer_rows({task: rows_of("a", [0.0, 0.0]) + rows_of("b", [0.0])}, ["a", "b"])
    assert [r["best_model"] for r in flat] == [False, False]  # every model scores the same: none is best
    assert not any(r["best_model"] for r in table.best_layer_rows({task: rows_of("a", [0.3])}, ["a"]))


def test_latex_and_html_mark_the_best_and_carry_the_legend() -> None:
    models = ["fs", "mae", "random"]
    rows = table.best_layer_rows(results(), models)
    tex = table.latex(rows, [KNN, RET], models)
    assert r"\begin{tabular}{lcc}" in tex and r"fs & \textbf{83.79 (2)} & \textbf{45.00 (3)} \\" in tex
    assert r"k-NN top-1 (\%)" in tex and r"mae & 45.19 (tie: 2, 3) & 15.00 (2) \\" in tex
    assert r"\toprule" in tex and tex.count(r"\\") == 4 and "% (M): the Medium protocol" in tex
    page = table.html_page(rows, [KNN, RET], models)
    assert "<th>k-NN top-1 (%)</th>" in page and "<td><strong>83.79 (2)</strong></td>" in page
    assert "<td>45.19 (tie: 2, 3)</td>" in page and "<li>(M): the Medium protocol" in page


def test_block_list_joins_runs() -> None:
    assert table.block_list([1, 2, 3, 5, 7, 8]) == "1-3, 5, 7, 8"


def test_csv_round_trip_keeps_the_marks(tmp_path) -> None:
    """The CSV is machine-readable and the table can be rebuilt from it (flags read back as text)."""
    from vitscope.io import tables

    models = ["fs", "mae", "random"]
    rows = table.best_layer_rows(results(), models)
    tables.write_csv(rows, tmp_path / "best.csv", columns=table.COLUMNS)
    back = tables.read_csv(tmp_path / "best.csv")
    assert back[2]["blocks"] == "2;3" and back[2]["tie"] == "True" and back[0]["best_model"] == "True"
    assert table.markdown(back, [KNN, RET], models) == table.markdown(rows, [KNN, RET], models)


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
    assert found["single"]["blocks"] == "" and math.isnan(found["single"]["score"])
    assert found["single"]["note"] == "undefined: 1 class" and found["bare"]["note"] == "undefined: undefined"
    assert (found["fs"]["blocks"], found["fs"]["score"], found["fs"]["note"]) == ("1", 25.0, "")
    md = table.markdown(rows, [NMI], models).splitlines()
    assert md[2:6] == ["| single | n/a (1 class) |", "| fs | 25.0 (1) |", "| bare | n/a (undefined) |",
                       "| none | - |"]
    assert "- n/a (reason): every value of the model is undefined." in md
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
