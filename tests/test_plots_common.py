"""vitscope.plots.common: figures saved atomically and reproducibly, and table rows as a grid."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vitscope.plots import common


def figure():
    fig, ax = common.plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0], color=common.PALETTE[0])
    ax.set_title("t")
    return fig


def test_save_writes_every_format_identically_on_a_rerun(tmp_path: Path, monkeypatch) -> None:
    """No creation date in the PDF: a rerun years later (SOURCE_DATE_EPOCH moved) gives the same bytes."""
    paths = [tmp_path / "a" / "fig.pdf", tmp_path / "a" / "fig.png"]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1000000000")
    common.save(figure(), paths)
    first = [p.read_bytes() for p in paths]
    assert first[0].startswith(b"%PDF") and first[1].startswith(b"\x89PNG")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    common.save(figure(), paths)
    assert [p.read_bytes() for p in paths] == first  # no timestamps
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["fig.pdf", "fig.png"]  # no temporaries


def test_save_closes_the_figure(tmp_path: Path) -> None:
    fig = figure()
    common.save(fig, [tmp_path / "f.png"])
    assert not common.plt.fignum_exists(fig.number)


def test_a_failed_save_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "f.png"
    common.save(figure(), [path])
    before = path.read_bytes()
    with pytest.raises(ValueError, match="Format 'nosuch' is not supported"):
        common.save(figure(), [path, tmp_path / "f.nosuch"])
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]


def test_table_grid_places_rows_by_block_and_head() -> None:
    rows = [{"block": "1", "head": "2", "entropy": "0.5"}, {"block": "2", "head": "1", "entropy": "0.25"}]
    grid = common.table_grid(rows, "entropy")
    assert grid.shape == (2, 2) and grid[0, 1] == 0.5 and grid[1, 0] == 0.25
    assert math.isnan(grid[0, 0]) and np.isnan(grid[1, 1])  # a missing cell stays NaN
