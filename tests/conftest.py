"""Fixtures shared by test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A temporary copy of the workflow on the TINY config (tests/test_workflow.py), run once
    per session: test_workflow, test_report and test_reliability all read it."""
    from test_workflow import TINY, copy_workflow, snakemake

    workdir = copy_workflow(tmp_path_factory.mktemp("wf"), TINY)
    snakemake(workdir)
    return workdir
