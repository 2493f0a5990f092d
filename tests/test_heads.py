"""vitscope.attention.heads: the offset-local head detector and the CLS-head selection rule.

Hand-built heads (a fixed neighbour, centred local, uniform / global) go through
attention.aligned_attention, on square and non-square grids, and the detector must
label exactly those heads, with the right direction. New metrics are checked
against slow float64 loops written from docs/attention.md.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitscope.attention import heads
from vitscope.attention import metrics as attention

# --------------------------------------------------------------------------- hand-built heads


def shifted(grid: tuple[int, int], dx: int, dy: int, boundary: str = "self") -> np.ndarray:
    """(G, G) spatial attention: query (i, j) attends to (i + dy, j + dx). Queries whose
    target falls off the grid attend to themselves ('self') or uniformly ('uniform')."""
    gh, gw = grid
    g = gh * gw
    s = np.zeros((g, g))
    for q in range(g):
        i, j = divmod(q, gw)
        r, c = i + dy, j + dx
        if 0 <= r < gh and 0 <= c < gw:
            s[q, r * gw + c] = 1.0
        elif boundary == "self":
            s[q, q] = 1.0
        else:
            s[q] = 1.0 / g
    return s


def blurred_self(grid: tuple[int, int], centre: float = 0.6) -> np.ndarray:
    """Centred local head: ``centre`` on the query, the rest spread over its 4-neighbours."""
    gh, gw = grid
    g = gh * gw
    s = np.zeros((g, g))
    for q in range(g):
        i, j = divmod(q, gw)
        nbrs = [(i + a, j + b) for a, b in ((-1, 0), (1, 0), (0, -1), (0, 1)) if 0 <= i + a < gh and 0 <= j + b < gw]
        s[q, q] = centre
        for r, c in nbrs:
            s[q, r * gw + c] = (1 - centre) / len(nbrs)
    return s


def random_global(grid: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = grid[0] * grid[1]
    return rng.dirichlet(np.full(g, 5.0), size=g)


def with_cls(spatial: np.ndarray, seed: int = 0) -> torch.Tensor:
    """(G, G) -> (T, T) with a CLS token that takes 30% of every spatial row (dropped again)."""
    rng = np.random.default_rng(seed)
    g = spatial.shape[0]
    a = np.zeros((g + 1, g + 1))
    a[0] = rng.dirichlet(np.ones(g + 1))
    a[1:, 0] = 0.3
    a[1:, 1:] = 0.7 * spatial
    return torch.from_numpy(a)


# (name, builder, expected label, expected direction)
def bank(grid: tuple[int, int]) -> list[tuple[str, np.ndarray, str, str]]:
    return [
        ("left", shifted(grid, -1, 0), "offset-local", "1 token left"),
        ("up-right", shifted(grid, 1, -1), "offset-local", "1 token up-right"),
        ("down", shifted(grid, 0, 1, boundary="uniform"), "offset-local", "1 token down"),
        ("right-2", shifted(grid, 2, 0), "offset-local", "2 tokens right"),
        ("self", np.eye(grid[0] * grid[1]), "local", "centred"),
        ("blurred-self", blurred_self(grid), "local", "centred"),
        ("uniform", np.full((grid[0] * grid[1],) * 2, 1.0 / (grid[0] * grid[1])), "global", ""),
        ("random", random_global(grid, seed=3), "global", ""),
    ]


GRIDS = [(6, 6), (7, 7), (5, 8), (8, 5), (14, 14)]


@pytest.mark.parametrize("grid", GRIDS)
def test_detector_labels_exactly_the_built_heads(grid):
    cases = bank(grid)
    attn = torch.stack([with_cls(s, seed=i) for i, (_, s, _, _) in enumerate(cases)])
    aligned = attention.aligned_attention(attn, grid)  # (8, 2gh-1, 2gw-1)
    rows = heads.heads_table(aligned[None])  # one block, eight heads
    got = [(r["label"], r["direction"]) for r in rows]
    want = [(label, direction) for _, _, label, direction in cases]
    assert got == want
    assert [r["head"] for r in rows] == list(range(1, len(cases) + 1))
    assert all(r["block"] == 1 for r in rows)
    assert {(r["radius"], r["min_mass"], r["min_shift"], r["min_lift"]) for r in rows} == {(1, 0.5, 0.5, 2.0)}


@pytest.mark.parametrize("grid", [(6, 6), (5, 8)])
def test_detector_peak_and_mass_of_a_shifted_head(grid):
    """Left-neighbour head: (gw-1)/gw of the mass one token left, 1/gw on the query; the
    radius-1 neighbourhood holds it all; its centre (-(gw-1)/gw, 0) tokens."""
    gh, gw = grid
    aligned = attention.aligned_attention(with_cls(shifted(grid, -1, 0)), grid)
    found = heads.detect(aligned)
    assert (int(found["peak_dx"]), int(found["peak_dy"])) == (-1, 0)
    assert float(found["mass"]) == pytest.approx(1.0, abs=1e-12)
    assert float(found["local_dx"]) == pytest.approx(-(gw - 1) / gw, abs=1e-12)
    assert float(found["local_dy"]) == pytest.approx(0.0, abs=1e-12)
    unit = max(gh, gw) - 1
    assert float(found["cx"]) == pytest.approx(-(gw - 1) / gw / unit, abs=1e-12)
    assert float(found["offset_tokens"]) == pytest.approx((gw - 1) / gw, abs=1e-12)


def test_thresholds_change_the_labels():
    grid = (6, 6)
    down = attention.aligned_attention(with_cls(shifted(grid, 0, 1, boundary="uniform")), grid)
    # 5/6 of the queries shift down; the other 1/6 spread -> neighbourhood mass just above 5/6
    mass = float(heads.detect(down)["mass"])
    assert 5 / 6 < mass < 0.9
    assert heads.LABELS[int(heads.detect(down, heads.Thresholds(min_mass=0.9))["label"])] == "global"
    # a far-away peak with radius 0: the peak cell alone
    right2 = attention.aligned_attention(with_cls(shifted(grid, 2, 0)), grid)
    found = heads.detect(right2, heads.Thresholds(radius=0))
    assert float(found["mass"]) == pytest.approx(4 / 6, abs=1e-12)
    assert heads.LABELS[int(found["label"])] == "offset-local"
    # demanding a shift of 3 tokens makes the 2-token head "local"
    assert heads.LABELS[int(heads.detect(right2, heads.Thresholds(min_shift=3))["label"])] == "local"
    with pytest.raises(ValueError, match="thresholds"):
        heads.Thresholds(min_mass=0)


@pytest.mark.parametrize("grid", [(2, 2), (3, 3), (2, 4), (8, 8), (14, 14)])
def test_uniform_attention_is_global_on_every_grid(grid):
    """The tent uniform attention makes is not locality: on 3 x 3 it holds 0.60 within a token of
    the query, above min_mass, and only min_lift keeps it global."""
    g = grid[0] * grid[1]
    uniform = attention.aligned_attention(torch.full((1 + g, 1 + g), 1.0 / (1 + g), dtype=torch.float64), grid)
    torch.testing.assert_close(uniform / uniform.sum(), heads.uniform_aaam(grid), rtol=1e-12, atol=1e-15)
    found = heads.detect(uniform)
    assert float(found["mass"]) == pytest.approx(float(found["uniform_mass"]), rel=1e-12)
    assert heads.LABELS[int(found["label"])] == "global"
    if grid == (3, 3):
        assert float(found["mass"]) == pytest.approx(49 / 81)  # (3g - 2)^2 / g^4
        assert heads.LABELS[int(heads.detect(uniform, heads.Thresholds(min_lift=0))["label"])] == "local"


def test_min_lift_changes_nothing_where_min_mass_already_demands_more():
    """On 8 x 8 the uniform share of a radius-1 neighbourhood is at most 0.12, so a head that
    passes min_mass 0.5 has a lift above 4: min_lift 2 leaves every label as it was."""
    grid = (8, 8)
    gen = torch.Generator().manual_seed(5)
    logits = 6.0 * torch.randn(40, 65, 65, generator=gen, dtype=torch.float64)
    aligned = attention.aligned_attention(logits.softmax(-1), grid)
    shifted_heads = torch.stack([attention.aligned_attention(with_cls(shifted(grid, dx, dy)), grid)
                                 for dx, dy in [(-1, 0), (1, 1), (0, 2)]])
    maps = torch.cat([aligned, shifted_heads])
    with_lift = heads.detect(maps)["label"]
    without = heads.detect(maps, heads.Thresholds(min_lift=0))["label"]
    assert torch.equal(with_lift, without) and (with_lift == 2).sum() >= 3


def test_tied_peak_prefers_the_query():
    """Half on the query, half one token left (a 2-column grid): the peak is the query cell.
    (On a 2 x 2 grid a radius-1 neighbourhood is the whole canvas, as for uniform attention: only
    with min_lift 0 is any head local there.)"""
    canvas = torch.zeros(3, 3, dtype=torch.float64)
    canvas[1, 1] = canvas[1, 0] = 0.5
    found = heads.detect(canvas, heads.Thresholds(min_shift=0.6, min_lift=0))
    assert (int(found["peak_dx"]), int(found["peak_dy"])) == (0, 0)
    assert float(found["local_dx"]) == pytest.approx(-0.5)
    assert heads.LABELS[int(found["label"])] == "local"


def slow_detect(canvas: np.ndarray, radius: int, min_mass: float, min_shift: float, min_lift: float = 2.0) -> dict:
    """Loop version of docs/attention.md's rule, float64 (the uniform tent counted query by query)."""
    h, w = canvas.shape
    gh, gw = (h + 1) // 2, (w + 1) // 2
    m = canvas / canvas.sum()
    best = None
    for r in range(h):
        for c in range(w):
            dx, dy = c - (gw - 1), r - (gh - 1)
            key = (-m[r, c], dx * dx + dy * dy, r, c)
            if best is None or key < best[0]:
                best = (key, dx, dy)
    _, pdx, pdy = best
    mass = lx = ly = 0.0
    for r in range(h):
        for c in range(w):
            dx, dy = c - (gw - 1), r - (gh - 1)
            if abs(dx - pdx) <= radius and abs(dy - pdy) <= radius:
                mass += m[r, c]
                lx += m[r, c] * dx
                ly += m[r, c] * dy
    lx, ly = lx / mass, ly / mass
    uniform = 0.0  # every query (qi, qj) gives 1/G to each key; count the keys landing in the cells
    for qi in range(gh):
        for qj in range(gw):
            for ki in range(gh):
                for kj in range(gw):
                    dx, dy = kj - qj, ki - qi
                    if abs(dx - pdx) <= radius and abs(dy - pdy) <= radius:
                        uniform += 1.0 / (gh * gw) ** 2
    if mass < min_mass or mass < min_lift * uniform:
        label = "global"
    else:
        label = "offset-local" if math.hypot(lx, ly) >= min_shift else "local"
    return {"peak_dx": pdx, "peak_dy": pdy, "mass": mass, "local_dx": lx, "local_dy": ly, "label": label,
            "uniform_mass": uniform}


@pytest.mark.parametrize("grid", [(4, 4), (3, 5), (5, 3), (7, 7)])
@pytest.mark.parametrize(
    "thresholds",
    [heads.Thresholds(), heads.Thresholds(2, 0.3, 1.0), heads.Thresholds(0, 0.1, 0.5),
     heads.Thresholds(1, 0.2, 0.5, 3.0)],
)
def test_detect_matches_loop_on_random_maps(grid, thresholds):
    gen = torch.Generator().manual_seed(11)
    logits = 4.0 * torch.randn(6, 2, 1 + grid[0] * grid[1], 1 + grid[0] * grid[1], generator=gen, dtype=torch.float64)
    aligned = attention.aligned_attention(logits.softmax(dim=-1), grid)  # (6, 2, 2gh-1, 2gw-1)
    found = heads.detect(aligned, thresholds)
    for i in range(6):
        for j in range(2):
            want = slow_detect(aligned[i, j].numpy(), thresholds.radius, thresholds.min_mass, thresholds.min_shift,
                               thresholds.min_lift)
            assert int(found["peak_dx"][i, j]) == want["peak_dx"]
            assert int(found["peak_dy"][i, j]) == want["peak_dy"]
            for key in ("mass", "local_dx", "local_dy", "uniform_mass"):
                assert float(found[key][i, j]) == pytest.approx(want[key], rel=1e-12, abs=1e-14)
            assert heads.LABELS[int(found["label"][i, j])] == want["label"]


def test_aaam_from_sums_matches_mean_of_aligned():
    grid = (3, 4)
    gen = torch.Generator().manual_seed(2)
    attn = (3 * torch.randn(5, 2, 3, 13, 13, generator=gen, dtype=torch.float64)).softmax(-1)  # (N, L, H, T, T)
    per_image = attention.aligned_attention(attn, grid)
    aligned_sum = attention.align(attention.spatial_attention(attn), grid).sum(dim=0)
    got = heads.aaam(aligned_sum, count=5, queries=12)
    torch.testing.assert_close(got, per_image.mean(dim=0), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got.sum(dim=(-2, -1)), torch.ones(2, 3, dtype=torch.float64))


@pytest.mark.parametrize(
    ("dx", "dy", "words"),
    [
        (-1, 0, "1 token left"), (1, 0, "1 token right"), (0, -1, "1 token up"), (0, 2, "2 tokens down"),
        (1, -1, "1 token up-right"), (-2, 2, "2 tokens down-left"), (-2, 1, "1 down, 2 left"), (0, 0, "centred"),
    ],
)
def test_direction_words(dx, dy, words):
    assert heads.direction(dx, dy) == words


# --------------------------------------------------------------------------- CLS-head selection


def test_map_entropy_by_hand_and_against_loop():
    maps = torch.zeros(3, 2, 2, dtype=torch.float64)
    maps[0, 0, 0] = 1.0  # a point: 0
    maps[1] = 0.25  # uniform: 1
    maps[2, 0] = 0.5  # two tokens: log 2 / log 4 = 1/2
    torch.testing.assert_close(heads.map_entropy(maps), torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64))
    rng = np.random.default_rng(0)
    m = rng.random((4, 3, 5)) * 7
    want = [-sum(p * math.log(p) for p in (x / x.sum()).ravel()) / math.log(15) for x in m]
    np.testing.assert_allclose(heads.map_entropy(torch.from_numpy(m)).numpy(), want, rtol=1e-12)


@pytest.mark.parametrize(
    ("blocks", "depth", "want"), [(12, (0.5, 1), (6, 12)), (5, (0.5, 1), (3, 5)), (4, (0, 0.25), (1, 1))]
)
def test_block_range(blocks, depth, want):
    assert heads.block_range(blocks, depth) == want


def test_select_heads_hand_built():
    """4 blocks x 3 heads; candidates are blocks 2..4 (depth 0.5..1 of L=4 -> ceil(2)=2).
    Block 1 holds the extreme entropies, which must be ignored."""
    entropy = torch.tensor(
        [
            [0.00, 0.99, 0.50],  # block 1: outside the range
            [0.30, 0.80, 0.45],  # block 2
            [0.20, 0.60, 0.40],  # block 3
            [0.90, 0.10, 0.55],  # block 4
        ],
        dtype=torch.float64,
    )
    # sorted candidates: .10 (4,2) .20 (3,1) .30 (2,1) .40 (3,3) .45 (2,3) .55 (4,3) .60 (3,2) .80 (2,2) .90 (4,1)
    # n = 9, positions 0, 4, 8
    picks = heads.select_heads(entropy, depth=(0.5, 1.0), quantiles=(0, 0.5, 1))
    assert picks == [(3, 1), (1, 2), (3, 0)]  # 0-based (block, head)
    rows = heads.cls_heads_table(torch.rand(4, 3, 2, 2), depth=(0.5, 1.0))
    assert sum(r["candidate"] for r in rows) == 9
    assert sorted(r["chosen"] for r in rows if r["chosen"]) == ["median", "most concentrated", "most diffuse"]
    str_rows = [{k: str(v) for k, v in r.items()} for r in rows]
    chosen = heads.chosen_heads(str_rows, (0, 0.5, 1))
    assert [c[2] for c in chosen] == ["most concentrated", "median", "most diffuse"]
    with pytest.raises(ValueError, match="candidate heads"):
        heads.select_heads(entropy[:, :1], depth=(1.0, 1.0), quantiles=(0, 0.5, 1))
