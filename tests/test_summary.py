"""The end-of-run summary (vitscope.workflow.summary): only what exists, the table, the report command."""

from __future__ import annotations

from vitscope.workflow import summary

TABLE = "| model | toy_val k-NN top-1, k=3 (%) |\n|---|---|\n| a | **50.00 (2)** |\n\n- Scores in % ...\n"


def test_a_whole_run_names_every_figure_folder_the_table_and_the_report() -> None:
    existing = [
        "results/dumps/a/toy.h5",
        "results/figures/cls_maps/a/toy.pdf", "results/figures/cls_maps/a/toy.png",
        "results/figures/cls_maps/b/toy.pdf", "results/figures/cls_maps/b/toy.png",
        "results/figures/knn/toy_val.pdf", "results/figures/knn/toy_val.csv",
        "results/figures/attention_grids/a/toy",  # a folder of PNGs
        summary.TABLE, "results/tables/best_layers.csv",
    ]
    text = summary.text(existing, TABLE)
    lines = text.splitlines()
    assert lines[0] == "vitscope: the run finished."
    assert lines[1].startswith("Figures (4) in results/figures/, each PDF with a PNG beside it")
    assert "  attention_grids/ a/toy" in lines and "  cls_maps/        a/toy.pdf, b/toy.pdf" in lines
    assert "  knn/             toy_val.pdf" in lines
    assert "Best-layer table: results/tables/best_layers.md (also .csv, .tex and .html beside it)" in lines
    assert "| a | **50.00 (2)** |" in lines  # the table itself
    assert lines[-1] == "Report: snakemake --report results/report.zip (unzip it and open report/report.html)"
    assert "dumps" not in text


def test_a_run_of_one_figure_names_just_that_figure() -> None:
    text = summary.text(["results/figures/cls_heads/toy.pdf", "results/figures/cls_heads/toy.png"], None,
                        ["fig_cls_heads"])
    assert "Figures (1)" in text and "cls_heads/ toy.pdf" in text
    assert "Best-layer table" not in text and "cls_maps" not in text
    assert "Report: snakemake fig_cls_heads --report results/report.zip" in text


def test_long_folders_are_cut_and_nothing_made_says_so() -> None:
    pdfs = [f"results/figures/cka_full/toy/m{i}/m{i}.pdf" for i in range(5)]
    assert "toy/m0/m0.pdf, toy/m1/m1.pdf, toy/m2/m2.pdf, ... (5 in all)" in summary.text(pdfs, None)
    assert summary.text([], None) == "vitscope: the run finished.\n"  # e.g. only the data was asked for


def test_the_report_command_repeats_the_configfile_and_targets() -> None:
    command = summary.report_command(["results/figures/knn/val.pdf"], ["configs/study_b16.yaml"])
    assert command == ("snakemake --configfile configs/study_b16.yaml results/figures/knn/val.pdf "
                       "--report results/report.zip")
