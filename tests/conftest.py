"""Fixtures shared by test modules."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

#: the test that compares two independent runs of the TINY workflow (tests/test_reliability.py)
TWO_RUNS = "test_two_cpu_runs_of_the_demo_are_bit_identical"


def pytest_collection_modifyitems(session, config, items) -> None:
    """The Slurm tests first (order kept otherwise): their cluster run mostly waits on
    Slurm, so it starts before the TINY runs and goes beside them (tests/test_slurm.py)."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is None)


@pytest.fixture(scope="session")
def tiny_runs(request, tmp_path_factory) -> dict[str, Path]:
    """The TINY workflow (tests/test_workflow.py) run once per session, in a temporary copy
    ("first"): test_workflow, test_report, test_reliability and test_slurm read it.

    When the session also holds the bit-identical test, a second, independent run
    ("second", another folder) runs at the same time: neither keeps both cores busy all the
    way (single-threaded jobs, a chain of dependent steps), so together they take far less
    than one after the other.
    """
    from test_workflow import SNAKEMAKE, TINY, copy_workflow

    wanted = ["first"]
    if any(getattr(item, "originalname", item.name) == TWO_RUNS for item in request.session.items):
        wanted.append("second")
    folders = {name: copy_workflow(tmp_path_factory.mktemp(f"wf-{name}"), TINY) for name in wanted}
    procs = {
        name: subprocess.Popen(
            [SNAKEMAKE, "--cores", "2"], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for name, folder in folders.items()
    }
    failed = []
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if proc.returncode != 0:
            failed.append(f"the {name} TINY run (exit {proc.returncode}):\n{out}")
    if failed:
        raise AssertionError("\n".join(failed))
    return folders


@pytest.fixture(scope="session")
def tiny_run(tiny_runs: dict[str, Path]) -> Path:
    """The folder of the session's TINY run (see :func:`tiny_runs`)."""
    return tiny_runs["first"]


@pytest.fixture(autouse=True)
def _close_figures(request):
    """The figure tests (test_plots_*.py) close what they drew."""
    yield
    if request.module.__name__.startswith("test_plots_"):
        import matplotlib.pyplot as plt

        plt.close("all")
