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


#: test modules that read the session's TINY run through request.getfixturevalue (not in fixturenames)
READS_TINY_RUN = frozenset({"test_slurm"})

#: the session's whole-workflow runs, started as soon as collection is done: name -> (folder, process)
_RUNS: dict[str, tuple[Path, subprocess.Popen]] = {}
#: what each finished run printed (stdout and stderr together)
_OUTPUTS: dict[str, str] = {}


def _wanted_runs(items) -> list[str]:
    """The whole-workflow runs the selected tests read: "first" (the TINY run), "second" (an
    independent TINY run, for the bit-identical test) and "stress" (the stress model's)."""
    wanted = set()
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"tiny_run", "tiny_runs"} or item.module.__name__ in READS_TINY_RUN:
            wanted.add("first")
        if getattr(item, "originalname", item.name) == TWO_RUNS:
            wanted |= {"first", "second"}
        if "stress_run" in names:
            wanted.add("stress")
    return [name for name in ("first", "second", "stress") if name in wanted]


def pytest_collection_finish(session) -> None:
    """Start every whole-workflow run the session's tests read, before the first test runs.

    Each run is a chain of single-threaded jobs that never keeps both cores busy, and pytest
    runs the unit tests in one process: started here, the runs go beside the unit tests (and
    beside each other) instead of after them. A fixture waits for its run when a test first
    needs it (:func:`tiny_runs`, :func:`stress_run`).
    """
    if session.config.option.collectonly:
        return
    from test_workflow import SNAKEMAKE, TINY, copy_workflow

    factory = session.config._tmp_path_factory
    for name in _wanted_runs(session.items):
        if name == "stress":
            from test_stress_workflow import CONFIG

            from vitscope.testing import stress

            folder = copy_workflow(factory.mktemp("wf-stress"), CONFIG)
            stress.write_stress_checkpoint(folder / "weights" / "stress.safetensors")
        else:
            folder = copy_workflow(factory.mktemp(f"wf-{name}"), TINY)
        _RUNS[name] = folder, subprocess.Popen(
            [SNAKEMAKE, "--cores", "2"], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )


def pytest_sessionfinish(session, exitstatus) -> None:
    for _, proc in _RUNS.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def workflow_run(name: str) -> Path:
    """The folder of the session's run ``name``, once it has finished (AssertionError if it failed)."""
    if name not in _RUNS:
        raise RuntimeError(f"no {name!r} run was started for this session (conftest._wanted_runs)")
    folder, proc = _RUNS[name]
    try:
        out, _ = proc.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    except ValueError:  # read already: communicate() was called by an earlier wait
        out = _OUTPUTS.get(name, "")
    _OUTPUTS.setdefault(name, out)
    if proc.returncode != 0:
        raise AssertionError(f"the {name} workflow run (exit {proc.returncode}):\n{out}")
    return folder


@pytest.fixture(scope="session")
def tiny_runs(request) -> dict[str, Path]:
    """The TINY workflow (tests/test_workflow.py) run once per session, in a temporary copy
    ("first"): test_workflow, test_report, test_reliability and test_slurm read it. When the
    session also holds the bit-identical test, a second, independent run ("second", another
    folder) runs at the same time. Both start when collection is done
    (:func:`pytest_collection_finish`)."""
    return {name: workflow_run(name) for name in ("first", "second") if name in _RUNS}


@pytest.fixture(scope="session")
def tiny_run(tiny_runs: dict[str, Path]) -> Path:
    """The folder of the session's TINY run (see :func:`tiny_runs`)."""
    return tiny_runs["first"]


@pytest.fixture(scope="session")
def tiny_run_output(tiny_run: Path) -> str:
    """What the session's TINY run printed (its end-of-run summary last)."""
    return _OUTPUTS["first"]


@pytest.fixture(autouse=True)
def _close_figures(request):
    """The figure tests (test_plots_*.py) close what they drew."""
    yield
    if request.module.__name__.startswith("test_plots_"):
        import matplotlib.pyplot as plt

        plt.close("all")
