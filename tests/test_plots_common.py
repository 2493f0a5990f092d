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


def test_text_problems_finds_small_fonts_and_overlaps_and_passes_a_clean_figure() -> None:
    fig, ax = common.plt.subplots(figsize=(3, 2))
    ax.set_title("clean", fontsize=9)
    ax.set_xlabel("x", fontsize=8)
    assert common.text_problems(fig) == []
    ax.text(0.5, 0.5, "tiny", fontsize=6)
    ax.text(0.1, 0.1, "one label", fontsize=9, transform=ax.transAxes)
    ax.text(0.12, 0.11, "another label", fontsize=9, transform=ax.transAxes)
    problems = common.text_problems(fig)
    assert any("'tiny' is 6.0 pt" in p for p in problems)
    assert any("'one label' overlaps 'another label'" in p for p in problems)
    common.plt.close(fig)


def test_rotated_labels_are_judged_by_their_rotated_boxes() -> None:
    """Tick labels at 45 degrees whose axis-aligned boxes overlap but whose glyphs do not pass;
    the same labels horizontal and packed collide."""
    names = ["contrastive", "supervised", "random init", "masked"]
    fig, ax = common.plt.subplots(figsize=(2.0, 2.0))
    ax.set_xticks(range(4), names, rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks([])
    assert common.text_problems(fig) == []
    ax.set_xticks(range(4), names, rotation=0, ha="center", fontsize=8)
    assert any("overlaps" in p for p in common.text_problems(fig))
    common.plt.close(fig)


def test_hidden_axes_and_blank_texts_are_not_checked() -> None:
    fig, ax = common.plt.subplots(figsize=(0.5, 0.5))
    ax.plot(range(100))  # many tick labels in a tiny axes ...
    ax.axis("off")  # ... that are never drawn
    ax.set_title(" ")
    assert common.text_problems(fig) == []
    common.plt.close(fig)


def test_save_records_the_verdict_in_the_png(tmp_path: Path) -> None:
    assert common.save(figure(), [tmp_path / "ok.png"]) == []
    assert common.png_text_check(tmp_path / "ok.png") == "ok"
    fig = figure()
    fig.axes[0].text(0, 0, "small", fontsize=5)
    problems = common.save(fig, [tmp_path / "bad.png", tmp_path / "bad.pdf"])
    assert problems and common.png_text_check(tmp_path / "bad.png") == "\n".join(problems)


def test_text_is_measured_as_saved_with_the_tight_box() -> None:
    """A figure text placed outside the axes area is judged where the saved (tight) figure has it."""
    fig, ax = common.plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], label="a long legend entry")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.text(0.9, 0.8, "a note on top of it", fontsize=8)
    assert any("overlaps 'a note on top of it'" in p or "'a note on top of it' overlaps" in p
               for p in common.text_problems(fig))
    common.plt.close(fig)
