"""The whole TINY workflow on the stress model (vitscope.testing.stress): massive activations,
attention sinks, rows whose spatial mass underflows to 0 and a register token. No dump, table or
figure may hold a NaN without a reason written next to it."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import workflow_run
from test_workflow import TINY

from vitscope.testing import stress

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

CONFIG = {
    **TINY,
    "models": {"stress": {**stress.MODEL_ENTRY, "checkpoint": "weights/stress.safetensors"}},
    # DAVIS frames resized to cover the stress model's 64 px window
    "analyses": {**TINY["analyses"], "davis": {**TINY["analyses"]["davis"], "short_side": stress.IMAGE_SIZE}},
}


@pytest.fixture(scope="module")
def stress_run() -> Path:
    """The whole workflow on the stress model (CONFIG, with its checkpoint written first), started
    when collection is done, beside the other tests (tests/conftest.py)."""
    return workflow_run("stress")


def _float_datasets(dump: h5py.File) -> list[str]:
    names: list[str] = []
    dump.visititems(lambda name, item: names.append(name)
                    if isinstance(item, h5py.Dataset) and item.dtype.kind == "f" else None)
    return names


def test_dumps_hold_no_nan_and_count_the_zero_mass_rows(stress_run: Path) -> None:
    dumps = sorted((stress_run / "results/dumps/stress").glob("*.h5"))
    assert len(dumps) == 4  # toy, toy_val, toy_ret, toy_coco (SPair and DAVIS run the model themselves)
    for path in dumps:
        with h5py.File(path) as dump:
            bad = [name for name in _float_datasets(dump) if not np.isfinite(dump[name][...]).all()]
            assert not bad, f"{path.name}: non-finite values in {bad}"
            if "attention/zero_mass_rows" in dump:
                assert dump["attention/zero_mass_rows"][...].sum() > 0  # the sinks underflow, and are counted
            if dump.attrs["explicit_attention"]:  # measured (NaN means not measured: fused products only)
                assert np.isfinite(dump.attrs["parity_max_abs_diff"])


def test_tables_hold_no_nan_without_a_note(stress_run: Path) -> None:
    tables = sorted((stress_run / "results").rglob("*.csv"))
    assert len(tables) > 10
    unexplained = []
    for path in tables:
        with open(path, newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), 2):
                nan = [k for k, v in row.items() if isinstance(v, str) and v.strip().lower() in ("nan", "inf", "-inf")]
                if nan and not (row.get("note") or "").strip():
                    unexplained.append(f"{path.relative_to(stress_run)} line {line}: {nan}")
    assert not unexplained, "\n".join(unexplained[:20])


def test_arrays_behind_the_figures_are_finite_and_cka_is_one_on_the_diagonal(stress_run: Path) -> None:
    for path in sorted((stress_run / "results/attention/stress").rglob("*.npz")):
        with np.load(path) as arrays:
            for key in arrays.files:
                if arrays[key].dtype.kind == "f":
                    assert np.isfinite(arrays[key]).all(), f"{path.name}:{key}"
    with np.load(stress_run / "results/cka/toy/stress/stress.npz") as cka:
        for key in ("blocks", "norms"):
            for rep in ("spatial", "all"):  # defined everywhere: finite, 1 on the diagonal
                values = cka[f"{key}_{rep}"]
                assert np.isfinite(values).all(), f"{key}_{rep}"
                np.testing.assert_allclose(np.diag(values), 1.0, atol=1e-6)
            # the CLS token is the same for every image until the sinks make it depend on the image:
            # undefined there (NaN, noted in the table), 1 on the diagonal wherever it is defined
            diagonal = np.diag(cka[f"{key}_cls"])
            defined = np.isfinite(diagonal)
            assert defined[-1] and not defined[0]
            assert np.all(defined[np.argmax(defined):])  # undefined only at the first points
            np.testing.assert_allclose(diagonal[defined], 1.0, atol=1e-6)
    figures = sorted((stress_run / "results/figures").rglob("*.png"))
    assert len(figures) > 10 and all(p.stat().st_size > 1000 for p in figures)
