"""Single-image attention grids: query tokens on any grid, query maps, head groups."""

from __future__ import annotations

import numpy as np
import pytest

from vitscope.attention import exemplars


def test_query_tokens_match_the_study_on_14x14() -> None:
    # the study's select_positions on 14 x 14: token indices 7, 85, 91, 98, 189 (CLS = 0)
    rows = exemplars.query_rows((14, 14))
    assert rows == [0, 91, 7, 85, 98, 189]
    assert exemplars.query_tokens((14, 14)) == {
        "center": (6, 6), "top": (0, 6), "left": (6, 0), "right": (6, 13), "bottom": (13, 6)
    }


@pytest.mark.parametrize("grid", [(1, 1), (2, 3), (3, 5), (7, 7), (14, 14), (6, 10), (5, 2)])
def test_query_tokens_on_any_grid(grid) -> None:
    gh, gw = grid
    q = exemplars.query_tokens(grid)
    r, c = q["center"]
    assert (r, c) == ((gh - 1) // 2, (gw - 1) // 2)
    # odd sides: the exact middle; every query on the grid, edges on the edges
    if gh % 2:
        assert r == gh // 2
    assert q["top"] == (0, c) and q["bottom"] == (gh - 1, c)
    assert q["left"] == (r, 0) and q["right"] == (r, gw - 1)
    assert all(0 <= rr < gh and 0 <= cc < gw for rr, cc in q.values())
    assert exemplars.query_rows(grid, prefix=3)[1] == 3 + r * gw + c


def test_query_maps_pick_rows_and_renormalise() -> None:
    grid, prefix = (2, 3), 2
    t = prefix + 6
    rng = np.random.default_rng(0)
    attn = rng.random((4, 2, t, t))
    attn /= attn.sum(-1, keepdims=True)
    maps = exemplars.query_maps(attn, grid, prefix)
    assert maps.shape == (4, 2, len(exemplars.QUERIES), 2, 3)
    np.testing.assert_allclose(maps.sum(axis=(-2, -1)), 1.0, atol=1e-6)
    for q, row in enumerate(exemplars.query_rows(grid, prefix)):
        expected = attn[1, 0, row, prefix:] / attn[1, 0, row, prefix:].sum()
        np.testing.assert_allclose(maps[1, 0, q].ravel(), expected, rtol=1e-6)


def test_head_groups_and_file_stems() -> None:
    assert exemplars.head_groups(12, 6) == [(0, 6), (6, 12)]
    assert exemplars.head_groups(3, 6) == [(0, 3)]
    assert exemplars.head_groups(7, 3) == [(0, 3), (3, 6), (6, 7)]
    groups = exemplars.head_groups(12, 6)
    assert exemplars.figure_stem(17, groups[1], groups) == "17_heads7-12"
    assert exemplars.figure_stem(17, (0, 3), [(0, 3)]) == "17"


def test_query_maps_of_zero_mass_rows_are_zero_not_nan() -> None:
    """A query whose attention is all on CLS (spatial mass exactly 0, docs/attention.md)
    used to give a NaN map (0/0) in the exemplar figures."""
    grid, prefix = (2, 2), 1
    attn = np.full((5, 5), 0.2, dtype=np.float32)
    attn[exemplars.query_rows(grid, prefix)[1]] = [1.0, 0.0, 0.0, 0.0, 0.0]
    maps = exemplars.query_maps(attn, grid, prefix)
    assert np.isfinite(maps).all()
    rows = exemplars.query_rows(grid, prefix)
    first = rows.index(rows[1])  # QUERIES may share a token on a small grid
    np.testing.assert_array_equal(maps[first], 0.0)
    np.testing.assert_allclose(maps[0].sum(), 1.0, rtol=1e-6)
