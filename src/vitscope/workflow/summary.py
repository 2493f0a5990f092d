"""The summary printed when a run succeeds (the Snakefile's ``onsuccess``, ``run_summary`` in
rules/common.smk): where the figures, the best-layer table and the report are, and the table.

:func:`text` is a pure function of what the run's jobs made or found (only files that exist:
a run of one figure names just that figure), the best-layer table's Markdown and the targets
the run was given. Nothing here imports torch or Snakemake.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

FIGURES = "results/figures"
TABLE = "results/tables/best_layers.md"
REPORT = "results/report.zip"
#: figures named per folder before "..."
SHOWN = 3


def figures(paths: Sequence[str]) -> dict[str, list[str]]:
    """Figure folder (results/figures/<folder>/) -> its figures among ``paths``: each PDF, and each
    folder of PNGs (a path without suffix, like the attention grids), relative to the folder."""
    found: dict[str, list[str]] = {}
    for path in sorted(set(paths)):
        parts = PurePosixPath(path).parts
        if parts[:2] != ("results", "figures") or len(parts) < 4:
            continue
        if path.endswith(".pdf") or not PurePosixPath(path).suffix:
            found.setdefault(parts[2], []).append(str(PurePosixPath(*parts[3:])))
    return found


def report_command(targets: Sequence[str], configfiles: Sequence[str] = ()) -> str:
    """The report of what the run made: its --configfile, its targets (none for the default
    target: everything), then --report."""
    options = [f"--configfile {path}" for path in configfiles]
    return " ".join(["snakemake", *options, *targets, "--report", REPORT])


def text(existing: Sequence[str], table: str | None, targets: Sequence[str] = (),
         configfiles: Sequence[str] = ()) -> str:
    """The summary of a run whose jobs' outputs ``existing`` exist; ``table``: the best-layer
    table's Markdown when it is one of them; ``targets``: the targets the run was given
    (rules or files; empty for the default target); ``configfiles``: its --configfile."""
    lines = ["vitscope: the run finished."]
    found = figures(existing)
    if found:
        count = sum(len(names) for names in found.values())
        lines.append(f"Figures ({count}) in {FIGURES}/, each PDF with a PNG beside it (and a CSV of its numbers "
                     "where it has one):")
        width = max(len(folder) for folder in found) + 1
        for folder, names in found.items():
            shown = ", ".join(names[:SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > SHOWN else "")
            lines.append(f"  {folder + '/':<{width}} {shown}")
    if TABLE in existing:
        lines.append(f"Best-layer table: {TABLE} (also .csv, .tex and .html beside it)")
        if table:
            lines += ["", *table.rstrip("\n").splitlines(), ""]
    if found or TABLE in existing:
        lines.append(f"Report: {report_command(targets, configfiles)} (unzip it and open report/report.html)")
    return "\n".join(lines) + "\n"
