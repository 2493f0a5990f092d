"""A new analysis through the registry alone (tests/test_registry.py has the unit side): a toy
analysis registered in a copied workflow, with its two rules, gets its targets in `rule all`, a
`fig_<name>` rule, a report entry with its category, a local plot rule and a Slurm group, with
no other file edited (no target list, no figure rule, no report call of its own, no profile)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_workflow import TINY, copy_workflow, planned_jobs, snakemake

from vitscope.workflow.registry import ATTENTION

pytestmark = [pytest.mark.workflow]

REGISTRATION = '''

register(Analysis(
    "toy_norms", ATTENTION,
    figures=(Figure("toy_norms", "results/figures/toy_norms/{model}/{dataset}"),),
    rules={"toy_norms": TABLES},
    config="cls_maps",  # runs on analyses.cls_maps.datasets (a real analysis adds its own schema key)
))
'''

RULES = '''

rule toy_norms:
    output:
        table="results/attention/{model}/{dataset}/toy_norms.csv",
    shell:
        "echo {wildcards.model} > {output.table}"


rule plot_toy_norms:
    input:
        table="results/attention/{model}/{dataset}/toy_norms.csv",
    output:
        pdf="results/figures/toy_norms/{model}/{dataset}.pdf",
        png=figure_report("results/figures/toy_norms/{model}/{dataset}.png", "toy_norms"),
    run:
        from PIL import Image

        Image.new("RGB", (8, 8), "red").save(output.png)
        Path(output.pdf).write_bytes(b"%PDF-1.4 toy")
'''


def test_a_registered_analysis_gets_its_jobs_targets_and_report_entry(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path, TINY)
    registry = workdir / "src/vitscope/workflow/registry.py"
    text = registry.read_text()
    registry.write_text(text.replace('\n\nif __name__ == "__main__":', REGISTRATION + '\n\nif __name__ == "__main__":'))
    with open(workdir / "rules/attention.smk", "a") as handle:
        handle.write(RULES)
    (workdir / "workflow/report/toy_norms.rst").write_text("Toy norms of **{{ snakemake.wildcards.model }}**.\n")

    jobs = planned_jobs(workdir)
    assert jobs["toy_norms"] == len(TINY["models"]) and jobs["plot_toy_norms"] == len(TINY["models"])
    assert planned_jobs(workdir, "fig_toy_norms") == {"toy_norms": 2, "plot_toy_norms": 2, "fig_toy_norms": 1}

    groups = subprocess.run([sys.executable, "-m", "vitscope.workflow.registry"], cwd=workdir / "src",
                            capture_output=True, text=True, check=True).stdout
    assert "  - toy_norms=tables\n" in groups
    listed = snakemake(workdir, "--list-rules").stdout.split()
    assert {"toy_norms", "plot_toy_norms", "fig_toy_norms"} <= set(listed)

    snakemake(workdir, "fig_toy_norms")
    snakemake(workdir, "--report", "report.zip", "fig_toy_norms")
    with zipfile.ZipFile(workdir / "report.zip") as archive:
        html = archive.read("report/report.html").decode()
    assert ATTENTION in html and "toy norms" in html
    assert "Toy norms of <strong>tiny_a</strong>" in html
