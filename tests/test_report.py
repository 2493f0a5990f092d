"""`snakemake --report results/report.zip` on the TINY workflow: every figure, every CSV beside a
figure and the best-layer table are in the report, in categories numbered from 1."""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import pytest
from test_workflow import snakemake

from vitscope.workflow import registry

pytestmark = [pytest.mark.workflow]


def test_report_holds_every_figure_its_numbers_and_the_table(tiny_run: Path) -> None:
    snakemake(tiny_run, "--report", "results/report.zip")  # profiles/default adds --report-metadata
    with zipfile.ZipFile(tiny_run / "results/report.zip") as archive:
        # files are stored as data/raw/<hash>/<file name>; compare contents
        stored = {hashlib.sha256(archive.read(n)).hexdigest() for n in archive.namelist() if "/data/raw/" in n}
        html = archive.read("report/report.html").decode()

    def missing(paths: list[Path]) -> list[Path]:
        return [p for p in paths if hashlib.sha256(p.read_bytes()).hexdigest() not in stored]

    figures = sorted((tiny_run / "results/figures").rglob("*.png"))
    numbers = sorted((tiny_run / "results/figures").rglob("*.csv"))
    assert len(figures) > 25 and len(numbers) >= 10
    assert not missing(figures), f"figures not in the report: {missing(figures)}"
    assert not missing(numbers), f"CSVs beside figures not in the report: {missing(numbers)}"
    table = [tiny_run / f"results/tables/best_layers.{ext}" for ext in ("html", "csv")]
    assert not missing(table), missing(table)

    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", html).group(1))
    assert sorted(categories) == ["1. Training (models the workflow trains)", "2. Attention (how)",
                                  "3. Features (what)", "4. Downstream (why)"] == list(registry.CATEGORIES)
    assert "best layers" in categories[registry.DOWNSTREAM]
    results = json.loads(re.search(r"var results = (\{.*?\});\n", html).group(1))
    by_path = {Path(path).as_posix(): entry for path, entry in results.items()}
    best = by_path["results/tables/best_layers.html"]
    assert best["labels"] == {"table": "best layers", "file": "table"} and "No single winner" in best["caption"]
    knn = by_path["results/figures/knn/toy_val.csv"]  # the CSV beside a figure: its caption names the figure
    assert knn["labels"]["file"] == "numbers (CSV)" and "results/figures/knn/toy_val.png" in knn["caption"]
    # the landing page is the workflow description, not the rule graph (workflow/report/metadata.yaml)
    assert json.loads(re.search(r"var metadata = (\{.*?\});\n", html).group(1))

    for text in ("tiny_a vs tiny_b", "toy_coco",  # labels
                 "Averaged CLS attention maps of model <strong>tiny_b</strong>",  # captions, with wildcards
                 "k-NN classification of <strong>toy_val</strong>", "Image retrieval on <strong>toy_ret</strong>",
                 "SPair-71k keypoint transfer on <strong>toy_spair</strong>",
                 "DAVIS-2017 semi-supervised video object segmentation on <strong>toy_davis</strong>",
                 "Training loss against step",
                 "<strong>vitscope</strong> compares",  # the workflow description
                 "<strong>1. Training</strong>", "<strong>4. Downstream (why)</strong>"):
        assert text in html, text
    assert not re.search(r"\)\.The\b", html)  # the retrieval caption ran into the next sentence
