"""`snakemake --report report.zip` on the TINY workflow: every figure is in the report."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from test_workflow import snakemake

pytestmark = [pytest.mark.workflow]


def test_report_holds_every_figure_with_its_caption(tiny_run: Path) -> None:
    snakemake(tiny_run, "--report", "report.zip")
    with zipfile.ZipFile(tiny_run / "report.zip") as archive:
        # figures are stored as data/raw/<hash>/<file name>; compare contents
        stored = {hashlib.sha256(archive.read(n)).hexdigest() for n in archive.namelist() if "/data/raw/" in n}
        html = archive.read("report/report.html").decode()
    figures = sorted((tiny_run / "results/figures").rglob("*.png"))
    assert len(figures) > 25
    missing = [p for p in figures if hashlib.sha256(p.read_bytes()).hexdigest() not in stored]
    assert not missing, f"figures not in the report: {missing}"
    for text in ("2. Training", "3. Attention (how)", "4. Features (what)", "5. Downstream (why)",  # categories
                 "tiny_a vs tiny_b", "toy_coco",  # labels
                 "Averaged CLS attention maps of model <strong>tiny_b</strong>",  # captions, with wildcards
                 "k-NN classification of <strong>toy_val</strong>", "Image retrieval on <strong>toy_ret</strong>",
                 "SPair-71k keypoint transfer on <strong>toy_spair</strong>",
                 "DAVIS-2017 semi-supervised video object segmentation on <strong>toy_davis</strong>",
                 "Training loss against step",
                 "<strong>vitscope</strong> compares"):  # the workflow description
        assert text in html, text
