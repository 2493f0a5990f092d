"""vitscope.plots.heads: the offset-local head figures, built from small hand-made offset tables
(every value a string, as read back from the CSV) and checked by their labels, titles and legends."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.patches import Rectangle

from vitscope.plots import common, heads


def offset_rows(blocks: int = 2, count: int = 3, local: tuple[int, int] = (2, 3)) -> list[dict[str, str]]:
    """An offset table of ``blocks`` x ``count`` heads; head ``local`` (block, head) is offset-local
    with its AAAM peak one token to the right."""
    rows = []
    for b in range(1, blocks + 1):
        for h in range(1, count + 1):
            special = (b, h) == local
            label = "offset-local" if special else ("local" if h == 1 else "global")
            rows.append({
                "block": str(b), "head": str(h), "label": label,
                "offset_tokens": str(1.0 if special else 0.1 * h), "offset": str(0.5 if special else 0.05 * h),
                "peak_dx": "1" if special else "0", "peak_dy": "0",
                "cx": str(0.5 if special else 0.0), "cy": "0.0", "cx_tokens": str(1.0 if special else 0.0),
                "cy_tokens": "0.0", "radius": "1", "min_mass": "0.5", "min_shift": "0.75",
            })
    return rows


def test_offset_heatmap_marks_the_offset_local_head() -> None:
    fig = heads.offset_heatmap(offset_rows(), "Offsets, dino")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "head" and ax.get_ylabel() == "block"
    assert fig._suptitle.get_text() == ("Offsets, dino\nAAAM centre of mass, distance from the query; red box + arrow: "
                                        "offset-local head (arrow: direction of its AAAM peak)")
    assert fig.axes[1].get_ylabel() == "offset (tokens)"  # the colour bar
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [b.get_xy() for b in boxes] == [(3 - 1.5, 2 - 1.5)]  # head 3 of block 2, centred on its cell
    np.testing.assert_allclose(ax.images[0].get_array(), [[0.1, 0.2, 0.3], [0.1, 0.2, 1.0]])
    assert "1.00" in [t.get_text() for t in ax.texts]  # values printed in the cells
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3"]


def test_offset_heatmap_has_one_fixed_scale_for_every_model() -> None:
    """Two models with very different offsets share the colour scale 0 to 1 token, so their figures
    compare; NaN cells say n/a."""
    small = offset_rows(local=(0, 0))
    small[1]["offset_tokens"] = "nan"
    figures = [heads.offset_heatmap(offset_rows(), "a"), heads.offset_heatmap(small, "b")]
    for fig in figures:
        norm = fig.axes[0].images[0].norm
        assert (norm.vmin, norm.vmax) == (0, heads.OFFSET_SCALE_TOKENS)
    assert "n/a" in [t.get_text() for t in figures[1].axes[0].texts]
    assert "no offset-local head" in figures[1]._suptitle.get_text()
    assert all(t.get_fontsize() >= 7 for t in figures[0].axes[0].texts)


def test_label_maps_legend_and_thresholds() -> None:
    fig = heads.label_maps({"dino": offset_rows(), "mae": offset_rows(local=(0, 0))}, title="Head types, toy")
    assert [ax.get_title() for ax in fig.axes[:2]] == ["dino: 1 offset-local", "mae: 0 offset-local"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["global", "local", "offset-local"]
    assert fig._suptitle.get_text() == (
        "Head types, toy\nthresholds: neighbourhood radius 1 token(s), mass >= 0.5, shift >= 0.75 token(s)"
    )
    codes = fig.axes[0].images[0].get_array()
    np.testing.assert_array_equal(codes, [[1, 0, 0], [1, 0, 2]])  # local, global, offset-local
    assert len(fig.axes[0].texts) == 1  # the arrow of the one offset-local head


def test_label_maps_hide_unused_panels() -> None:
    fig = heads.label_maps({f"m{i}": offset_rows() for i in range(5)})
    assert [ax.get_visible() for ax in fig.axes] == [True] * 5 + [False] * 3  # 2 rows of 4 panels


def test_offset_scatter_stars_and_units() -> None:
    fig = heads.offset_scatter({"dino": offset_rows(), "mae": offset_rows(local=(0, 0))}, units="tokens")
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["dino (1 offset-local)", "mae (0 offset-local)", "offset-local head"]
    assert ax.get_xlabel() == "cx, AAAM centre of mass right of the query (tokens)"
    assert ax.get_ylabel() == "cy, below the query (tokens)"
    assert ax.yaxis_inverted() and ax.get_title() == "AAAM centre of mass of every head"
    stars = ax.collections[1].get_offsets()  # dino's offset-local heads
    np.testing.assert_array_equal(stars, [[1.0, 0.0]])
    grid = heads.offset_scatter({"dino": offset_rows()}, title="t")
    assert "grid units, one token = 1/(g-1)" in grid.axes[0].get_xlabel() and grid.axes[0].get_title() == "t"
    np.testing.assert_array_equal(grid.axes[0].collections[1].get_offsets(), [[0.5, 0.0]])


def test_label_maps_say_plainly_that_none_was_found_and_by_which_criterion() -> None:
    none = {"fs": offset_rows(local=(0, 0)), "contrastive": offset_rows(local=(0, 0))}
    fig = heads.label_maps(none, title="Head types, toy")
    title = fig._suptitle.get_text()
    assert heads.none_found(none["fs"][0]) in title
    assert "NONE FOUND: no model has an offset-local head" in title
    assert "at least 0.5 of the head's AAAM\nwithin 1 token(s) of its peak" in title
    assert "at least 0.75 token(s) from the query" in title
    assert [ax.get_title() for ax in fig.axes[:2]] == ["fs: 0 offset-local", "contrastive: 0 offset-local"]
    assert common.text_problems(fig) == []
    assert "NONE FOUND" not in heads.label_maps({"fs": offset_rows()})._suptitle.get_text()


@pytest.mark.parametrize(("blocks", "count"), [(4, 3), (12, 12)])
def test_head_figures_have_clean_text(blocks: int, count: int) -> None:
    """Long model names, the demo's 4 x 3 and the study's 12 x 12 heads, a NaN cell: no text under
    7 pt and none overlapping."""
    rows = offset_rows(blocks, count, local=(2, 2))
    rows[0]["offset_tokens"] = "nan"
    names = ("fs", "contrastive", "mae", "moco_v3_vitb16")
    assert common.text_problems(heads.offset_heatmap(rows, "moco_v3_vitb16: AAAM offset, imagenet_50")) == []
    tables = {m: offset_rows(blocks, count, local=(2, 2) if m == "fs" else (0, 0)) for m in names}
    assert common.text_problems(heads.label_maps(tables, title="Head types from the AAAM, imagenet_50")) == []
    none = {m: offset_rows(blocks, count, local=(0, 0)) for m in names}
    assert common.text_problems(heads.label_maps(none, title="Head types from the AAAM, imagenet_50")) == []
    scatter = heads.offset_scatter(tables, title="AAAM centre of mass of every head, imagenet_50")
    assert common.text_problems(scatter) == []
