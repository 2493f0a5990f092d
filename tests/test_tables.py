"""vitscope.io.tables: the tidy CSV and NPZ outputs, read back as written, written atomically.

A table is rewritten only by renaming a complete temporary file onto it (vitscope.io.dumps.atomic_path):
a failure halfway leaves the previous file as it was and no temporary beside it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vitscope.errors import DumpError
from vitscope.io import tables


def test_csv_round_trip_keeps_every_value_as_text(tmp_path: Path) -> None:
    rows = [
        {"model": "dino", "block": 1, "value": 0.1 + 0.2, "note": ""},
        {"model": "mae", "block": 12, "value": np.float32(0.5), "note": "undefined: 1 class"},
        {"model": "a,b", "block": 3, "value": float("nan"), "note": 'quoted "x"'},
    ]
    tables.write_csv(rows, tmp_path / "t.csv")
    back = tables.read_csv(tmp_path / "t.csv")
    assert [list(r) for r in back] == [["model", "block", "value", "note"]] * 3
    assert back[0] == {"model": "dino", "block": "1", "value": "0.30000000000000004", "note": ""}  # full precision
    assert float(back[0]["value"]) == 0.1 + 0.2
    assert back[1]["value"] == "0.5" and back[1]["note"] == "undefined: 1 class"
    assert back[2]["model"] == "a,b" and back[2]["note"] == 'quoted "x"' and math.isnan(float(back[2]["value"]))


def test_csv_bytes_are_fixed(tmp_path: Path) -> None:
    """The exact bytes (header, CRLF line ends, repr of floats): reruns give identical tables."""
    tables.write_csv([{"a": 1, "b": 0.25}, {"a": 2, "b": np.float64(1e-17)}], tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_bytes() == b"a,b\r\n1,0.25\r\n2,1e-17\r\n"


def test_csv_columns_keep_the_given_order(tmp_path: Path) -> None:
    rows = [{"b": 2, "a": 1, "c": 3}]
    tables.write_csv(rows, tmp_path / "given.csv", columns=("c", "a", "b"))
    assert (tmp_path / "given.csv").read_text().splitlines()[0] == "c,a,b"
    assert list(tables.read_csv(tmp_path / "given.csv")[0]) == ["c", "a", "b"]
    tables.write_csv(rows, tmp_path / "first_row.csv")  # no columns: the first row's key order
    assert (tmp_path / "first_row.csv").read_text().splitlines()[0] == "b,a,c"


def test_csv_with_no_rows_has_its_header(tmp_path: Path) -> None:
    tables.write_csv([], tmp_path / "t.csv", columns=("model", "value"))
    assert tables.read_csv(tmp_path / "t.csv") == []
    assert (tmp_path / "t.csv").read_text().splitlines() == ["model,value"]


def test_missing_csv_is_a_dump_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DumpError, match="missing.csv' does not exist"):
        tables.read_csv(tmp_path / "missing.csv")


def test_npz_round_trip(tmp_path: Path) -> None:
    arrays = {
        "cls": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "count": np.int64(7),
        "names": np.array(["a", "bb"]),
        "empty": np.zeros((0, 5), np.float64),
    }
    tables.write_npz(tmp_path / "a.npz", **arrays)
    back = tables.read_npz(tmp_path / "a.npz")
    assert list(back) == list(arrays)
    for name, value in arrays.items():
        assert back[name].dtype == np.asarray(value).dtype and back[name].shape == np.shape(value)
        np.testing.assert_array_equal(back[name], value)


def test_npz_refuses_pickled_objects(tmp_path: Path) -> None:
    tables.write_npz(tmp_path / "o.npz", rows=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        tables.read_npz(tmp_path / "o.npz")


def test_text_round_trip(tmp_path: Path) -> None:
    tables.write_text("| a |\n|---|\n", tmp_path / "sub" / "t.md")
    assert (tmp_path / "sub" / "t.md").read_text() == "| a |\n|---|\n"


def test_failed_csv_write_leaves_the_old_table_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    tables.write_csv([{"a": 1}], path)
    before = path.read_bytes()
    rows = [{"a": 2}, {"a": 3, "unknown": 4}]  # the second row has a column the header lacks
    with pytest.raises(ValueError, match="unknown"):
        tables.write_csv(rows, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_failed_npz_write_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    with pytest.raises(Exception, match="lambda|pickle"):
        tables.write_npz(path, ok=np.zeros(3), bad=np.array([lambda: 0], dtype=object))
    assert list(tmp_path.iterdir()) == []


def test_failed_text_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "t.md"
    tables.write_text("old\n", path)
    with pytest.raises(TypeError):
        tables.write_text(None, path)  # type: ignore[arg-type]
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["t.md"]
