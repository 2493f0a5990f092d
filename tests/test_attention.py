"""vitscope.attention.metrics checked two ways (docs/protocols.md#attention-analyses).

1. Against slow, obvious float64 loops written from the protocol text (not
   from vitscope), on random softmax attention: several grids (square and
   non-square), prefix 1 (CLS) and 5 (CLS + 4 registers), leading batch/head
   dimensions.
2. Against hand-built heads whose values are worked out by hand: uniform
   attention, attention to self, attention to the left neighbour, and small
   2x2 / 3x3 examples written out numerically.

Grid units (module docstring): token (row, col) sits at (col, row) / (max(gh, gw) - 1).
Aligned-canvas coordinates (center_of_mass docstring): cell (row, col) of the
(2gh - 1) x (2gw - 1) canvas sits at (col - (gw - 1), row - (gh - 1)) / (max(gh, gw) - 1),
the protocol's v = 2 idx / (2g - 2) - 1 on a square grid.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitscope.attention import metrics as attention

# --------------------------------------------------------------------------- slow references


def slow_spatial(a: np.ndarray, grid: tuple[int, int], prefix: int) -> np.ndarray:
    """(T, T) -> (G, G): spatial queries and keys only, each row renormalised to sum 1."""
    g = grid[0] * grid[1]
    out = np.zeros((g, g))
    for q in range(g):
        row = [float(a[prefix + q, prefix + k]) for k in range(g)]
        total = sum(row)
        for k in range(g):
            out[q, k] = row[k] / total
    return out


def slow_distance(a: np.ndarray, grid: tuple[int, int], prefix: int) -> float:
    """Mean over spatial queries of sum_k A[q, k] * ||p_q - p_k||, p = (col, row) / (max - 1)."""
    gh, gw = grid
    unit = max(gh, gw) - 1
    s = slow_spatial(a, grid, prefix)
    total = 0.0
    for q in range(gh * gw):
        i, j = divmod(q, gw)
        for k in range(gh * gw):
            r, c = divmod(k, gw)
            total += s[q, k] * math.hypot((c - j) / unit, (r - i) / unit)
    return total / (gh * gw)


def slow_aligned(a: np.ndarray, grid: tuple[int, int], prefix: int) -> np.ndarray:
    """(2gh-1, 2gw-1): key (r, c) of query (i, j) added at (r - i + gh - 1, c - j + gw - 1); / G."""
    gh, gw = grid
    s = slow_spatial(a, grid, prefix)
    canvas = np.zeros((2 * gh - 1, 2 * gw - 1))
    for q in range(gh * gw):
        i, j = divmod(q, gw)
        for k in range(gh * gw):
            r, c = divmod(k, gw)
            canvas[r - i + gh - 1, c - j + gw - 1] += s[q, k]
    return canvas / (gh * gw)


def slow_center_of_mass(canvas: np.ndarray) -> tuple[float, float]:
    """Normalise to sum 1; x = (col - (gw-1)) / unit, y = (row - (gh-1)) / unit, unit = max(gh, gw) - 1."""
    h, w = canvas.shape
    gh, gw = (h + 1) // 2, (w + 1) // 2
    unit = max(gh, gw) - 1
    total = float(canvas.sum())
    cx = cy = 0.0
    for y in range(h):
        for x in range(w):
            m = canvas[y, x] / total
            cx += m * (x - (gw - 1)) / unit
            cy += m * (y - (gh - 1)) / unit
    return cx, cy


def slow_cls_map(
    a: np.ndarray, grid: tuple[int, int], prefix: int, renormalize: bool
) -> np.ndarray:
    gh, gw = grid
    out = np.zeros((gh, gw))
    for r in range(gh):
        for c in range(gw):
            out[r, c] = a[0, prefix + r * gw + c]
    if renormalize:
        out = out / out.sum()
    return out


def random_attention(
    lead: tuple[int, ...], tokens: int, seed: int, dtype=torch.float32
) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(*lead, tokens, tokens, generator=gen, dtype=torch.float64)
    return logits.softmax(dim=-1).to(dtype)


CASES = [
    # (grid, prefix, leading dims)
    ((4, 4), 1, ()),
    ((4, 4), 1, (2, 3)),
    ((3, 3), 5, (2,)),
    ((3, 5), 1, (2, 2)),
    ((5, 3), 1, (3,)),
    ((3, 5), 5, (2, 1, 2)),
    ((2, 2), 1, (4,)),
    ((1, 4), 1, (2,)),
]


def _flat(x: torch.Tensor, lead: tuple[int, ...]) -> np.ndarray:
    return x.reshape(-1, *x.shape[len(lead) :]).numpy() if lead else x[None].numpy()


@pytest.mark.parametrize("grid,prefix,lead", CASES)
def test_spatial_attention_matches_loop(grid, prefix, lead):
    t = prefix + grid[0] * grid[1]
    attn = random_attention(lead, t, seed=1, dtype=torch.float64)
    got = _flat(attention.spatial_attention(attn, prefix), lead)
    for b, a in enumerate(_flat(attn, lead)):
        np.testing.assert_allclose(got[b], slow_spatial(a, grid, prefix), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("grid,prefix,lead", CASES)
def test_distance_matches_loop(grid, prefix, lead):
    t = prefix + grid[0] * grid[1]
    attn = random_attention(lead, t, seed=2)
    got = attention.attention_distance(attn, grid, prefix)
    assert got.shape == lead
    assert got.dtype == torch.float64
    got = got.reshape(-1).numpy()
    want = [slow_distance(a.astype(np.float64), grid, prefix) for a in _flat(attn, lead)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("grid,prefix,lead", CASES)
def test_aligned_attention_matches_loop(grid, prefix, lead):
    gh, gw = grid
    t = prefix + gh * gw
    attn = random_attention(lead, t, seed=3)
    got = attention.aligned_attention(attn, grid, prefix)
    assert got.shape == (*lead, 2 * gh - 1, 2 * gw - 1)
    assert got.dtype == torch.float64
    got = _flat(got, lead)
    for b, a in enumerate(_flat(attn, lead)):
        want = slow_aligned(a.astype(np.float64), grid, prefix)
        np.testing.assert_allclose(got[b], want, rtol=1e-12, atol=1e-15)
        assert got[b].sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("grid,prefix,lead", CASES)
def test_align_of_summed_maps_is_sum_of_aligned(grid, prefix, lead):
    """align is linear: aligning a sum over images = summing aligned maps (extract relies on it)."""
    t = prefix + grid[0] * grid[1]
    attn = random_attention((5, *lead), t, seed=4, dtype=torch.float64)
    spatial = attention.spatial_attention(attn, prefix)
    summed = attention.align(spatial.sum(dim=0), grid)
    separate = attention.align(spatial, grid).sum(dim=0)
    torch.testing.assert_close(summed, separate, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grid,prefix,lead", [c for c in CASES if min(c[0]) > 1])
def test_center_of_mass_and_offset_match_loop(grid, prefix, lead):
    t = prefix + grid[0] * grid[1]
    attn = random_attention(lead, t, seed=5)
    aligned = attention.aligned_attention(attn, grid, prefix)
    com = attention.center_of_mass(aligned)
    off = attention.offset(aligned)
    assert com.shape == (*lead, 2)
    assert off.shape == lead
    com, off = _flat(com, lead), off.reshape(-1).numpy()
    for b, a in enumerate(_flat(attn, lead)):
        cx, cy = slow_center_of_mass(slow_aligned(a.astype(np.float64), grid, prefix))
        np.testing.assert_allclose(com[b], [cx, cy], rtol=1e-10, atol=1e-13)
        assert off[b] == pytest.approx(math.hypot(cx, cy), rel=1e-10, abs=1e-13)


def test_center_of_mass_normalises_unnormalised_maps():
    """A summed AAAM (aligned_sum in a dump) gives the same centre as the averaged one."""
    attn = random_attention((3,), 17, seed=6)
    aligned = attention.aligned_attention(attn, (4, 4)).sum(dim=0)
    torch.testing.assert_close(
        attention.center_of_mass(aligned * 37.0), attention.center_of_mass(aligned)
    )


@pytest.mark.parametrize("grid,prefix,lead", CASES)
@pytest.mark.parametrize("renormalize", [False, True])
def test_cls_map_matches_loop(grid, prefix, lead, renormalize):
    t = prefix + grid[0] * grid[1]
    attn = random_attention(lead, t, seed=7, dtype=torch.float64)
    got = attention.cls_map(attn[..., 0, :], grid, prefix, renormalize=renormalize)
    assert got.shape == (*lead, *grid)
    got = _flat(got, lead)
    for b, a in enumerate(_flat(attn, lead)):
        np.testing.assert_allclose(got[b], slow_cls_map(a, grid, prefix, renormalize), rtol=1e-12)


@pytest.mark.parametrize("grid", [(4, 4), (3, 5), (5, 3), (1, 1)])
def test_token_coordinates_and_distances_by_definition(grid):
    gh, gw = grid
    unit = max(max(gh, gw) - 1, 1)
    xy = attention.token_coordinates(grid).numpy()
    d = attention.distance_matrix(grid).numpy()
    for q in range(gh * gw):
        i, j = divmod(q, gw)
        assert tuple(xy[q]) == pytest.approx((j / unit, i / unit))
        for k in range(gh * gw):
            r, c = divmod(k, gw)
            assert d[q, k] == pytest.approx(math.hypot(c - j, r - i) / unit, abs=1e-12)


# --------------------------------------------------------------------------- hand-built heads


def embed(
    spatial: np.ndarray, prefix: int, prefix_mass: float = 0.3, seed: int = 0
) -> torch.Tensor:
    """Put a (G, G) row-stochastic spatial map into a (T, T) attention matrix whose spatial
    rows also give mass ``prefix_mass`` to random prefix keys (removed by renormalisation)."""
    rng = np.random.default_rng(seed)
    g = spatial.shape[0]
    t = prefix + g
    a = np.zeros((t, t))
    a[:prefix] = rng.dirichlet(np.ones(t), size=prefix)
    if prefix:
        a[prefix:, :prefix] = prefix_mass * rng.dirichlet(np.ones(prefix), size=g)
        a[prefix:, prefix:] = (1 - prefix_mass) * spatial
    else:
        a[:, :] = spatial
    assert np.allclose(a.sum(axis=1), 1)
    return torch.from_numpy(a)


def left_neighbour(grid: tuple[int, int]) -> np.ndarray:
    """Query (i, j) attends to (i, j - 1); queries on the first column attend to themselves."""
    gh, gw = grid
    s = np.zeros((gh * gw, gh * gw))
    for q in range(gh * gw):
        i, j = divmod(q, gw)
        s[q, i * gw + max(j - 1, 0)] = 1.0
    return s


def up_neighbour(grid: tuple[int, int]) -> np.ndarray:
    """Query (i, j) attends to (i - 1, j); queries on the first row attend to themselves."""
    gh, gw = grid
    s = np.zeros((gh * gw, gh * gw))
    for q in range(gh * gw):
        i, j = divmod(q, gw)
        s[q, max(i - 1, 0) * gw + j] = 1.0
    return s


@pytest.mark.parametrize("prefix", [0, 1, 5])
@pytest.mark.parametrize("grid", [(4, 4), (3, 5), (2, 2)])
def test_uniform_attention(grid, prefix):
    """Uniform spatial attention: the AAAM holds the number of (query, key) pairs at each
    offset, (gh - |dr|) (gw - |dc|), over G^2; the distance is the mean pairwise distance."""
    gh, gw = grid
    g = gh * gw
    attn = embed(np.full((g, g), 1.0 / g), prefix)
    aligned = attention.aligned_attention(attn, grid, prefix).numpy()
    counts = np.array(
        [
            [(gh - abs(dr)) * (gw - abs(dc)) for dc in range(-gw + 1, gw)]
            for dr in range(-gh + 1, gh)
        ]
    )
    np.testing.assert_allclose(aligned, counts / g**2, rtol=1e-12)
    # symmetric map: centre of mass on the query
    np.testing.assert_allclose(
        attention.center_of_mass(torch.from_numpy(aligned)).numpy(), 0, atol=1e-12
    )
    unit = max(gh, gw) - 1
    pairs = [
        math.hypot(divmod(q, gw)[0] - divmod(k, gw)[0], divmod(q, gw)[1] - divmod(k, gw)[1]) / unit
        for q in range(g)
        for k in range(g)
    ]
    assert float(attention.attention_distance(attn, grid, prefix)) == pytest.approx(
        np.mean(pairs), rel=1e-12
    )


def test_uniform_attention_closed_forms():
    """Written-out values: 2x2 and 3x3 uniform heads."""
    # 2x2: 4 self pairs (0), 8 neighbours (1), 4 diagonals (sqrt 2) -> (8 + 4 sqrt2) / 16
    a2 = embed(np.full((4, 4), 0.25), prefix=1)
    assert float(attention.attention_distance(a2, (2, 2))) == pytest.approx(
        (2 + math.sqrt(2)) / 4, rel=1e-12
    )
    np.testing.assert_allclose(
        attention.aligned_attention(a2, (2, 2)).numpy(),
        np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16,
        rtol=1e-12,
    )
    # 3x3: sum of pairwise token distances = 48 + 24 sqrt2 + 16 sqrt5 over 81 pairs,
    # one token = 1/2 grid unit
    a3 = embed(np.full((9, 9), 1 / 9), prefix=1)
    want = (48 + 24 * math.sqrt(2) + 16 * math.sqrt(5)) / 81 / 2
    assert float(attention.attention_distance(a3, (3, 3))) == pytest.approx(want, rel=1e-12)
    triangle = np.array([1, 2, 3, 2, 1])
    np.testing.assert_allclose(
        attention.aligned_attention(a3, (3, 3)).numpy(),
        np.outer(triangle, triangle) / 81,
        rtol=1e-12,
    )


@pytest.mark.parametrize("prefix", [0, 1, 5])
@pytest.mark.parametrize("grid", [(4, 4), (3, 5), (5, 5)])
def test_attention_to_self(grid, prefix):
    gh, gw = grid
    attn = embed(np.eye(gh * gw), prefix)
    assert float(attention.attention_distance(attn, grid, prefix)) == pytest.approx(0, abs=1e-15)
    aligned = attention.aligned_attention(attn, grid, prefix).numpy()
    delta = np.zeros((2 * gh - 1, 2 * gw - 1))
    delta[gh - 1, gw - 1] = 1.0
    np.testing.assert_allclose(aligned, delta, atol=1e-15)
    np.testing.assert_allclose(
        attention.center_of_mass(torch.from_numpy(aligned)).numpy(), 0, atol=1e-15
    )
    assert float(attention.offset(torch.from_numpy(aligned))) == pytest.approx(0, abs=1e-15)


@pytest.mark.parametrize("g", [2, 4, 14])
def test_one_token_shift_is_one_over_g_minus_one(g):
    """A single query's map shifted one token left: offset exactly 1/(g-1) (protocol)."""
    canvas = torch.zeros(2 * g - 1, 2 * g - 1, dtype=torch.float64)
    canvas[g - 1, g - 2] = 1.0
    cx, cy = attention.center_of_mass(canvas).tolist()
    assert cx == pytest.approx(-1 / (g - 1), rel=1e-12)
    assert cy == pytest.approx(0, abs=1e-15)
    assert float(attention.offset(canvas)) == pytest.approx(1 / (g - 1), rel=1e-12)


@pytest.mark.parametrize("prefix", [1, 5])
@pytest.mark.parametrize("g", [3, 4, 14])
def test_left_neighbour_square(g, prefix):
    """Every query attends to its left neighbour; first-column queries attend to themselves.

    g(g-1) of the g^2 queries put mass 1 one token left of the centre, g put it on the
    centre: AAAM = (g-1)/g at (g-1, g-2) and 1/g at (g-1, g-1). One token is 1/(g-1)
    both in canvas coordinates and in grid units, so the centre of mass is
    (-(g-1)/g * 1/(g-1), 0) = (-1/g, 0), the offset 1/g and the distance 1/g too.
    """
    attn = embed(left_neighbour((g, g)), prefix)
    aligned = attention.aligned_attention(attn, (g, g), prefix).numpy()
    want = np.zeros((2 * g - 1, 2 * g - 1))
    want[g - 1, g - 2] = (g - 1) / g
    want[g - 1, g - 1] = 1 / g
    np.testing.assert_allclose(aligned, want, atol=1e-15)
    cx, cy = attention.center_of_mass(torch.from_numpy(aligned)).tolist()
    assert cx == pytest.approx(-1 / g, rel=1e-12)
    assert cy == pytest.approx(0, abs=1e-15)
    assert float(attention.offset(torch.from_numpy(aligned))) == pytest.approx(1 / g, rel=1e-12)
    assert float(attention.attention_distance(attn, (g, g), prefix)) == pytest.approx(
        1 / g, rel=1e-12
    )


def test_left_and_up_neighbour_non_square():
    """3x5 grid. Grid units: one token = 1/4 along both axes (max(gh, gw) - 1 = 4).

    Left: 12 of 15 queries shift one column -> distance 12/15 * 1/4 = 1/5, and in canvas
    coordinates (x: one token = 1/(gw-1) = 1/4, the same as grid units here) cx = -1/5.
    Up: 10 of 15 queries shift one row -> distance 10/15 * 1/4 = 1/6.
    """
    grid = (3, 5)
    left = embed(left_neighbour(grid), 1)
    cx, cy = attention.center_of_mass(attention.aligned_attention(left, grid)).tolist()
    assert (cx, cy) == pytest.approx((-1 / 5, 0), abs=1e-12)
    assert float(attention.attention_distance(left, grid)) == pytest.approx(1 / 5, rel=1e-12)

    up = embed(up_neighbour(grid), 1)
    cx, cy = attention.center_of_mass(attention.aligned_attention(up, grid)).tolist()
    assert cx == pytest.approx(0, abs=1e-12)
    assert cy < 0
    assert float(attention.attention_distance(up, grid)) == pytest.approx(1 / 6, rel=1e-12)


def test_center_of_mass_non_square_is_isotropic():
    """On 3x5 one token is 1/(max(gh, gw) - 1) = 1/4 along both axes, the grid units of
    attention_distance. Up-neighbour head: 10 of 15 queries move one row up,
    cy = -(10/15) * 1/4 = -1/6."""
    grid = (3, 5)
    up = embed(up_neighbour(grid), 1)
    cx, cy = attention.center_of_mass(attention.aligned_attention(up, grid)).tolist()
    assert (cx, cy) == pytest.approx((0, -1 / 6), abs=1e-12)


def test_written_out_2x2_example():
    """A 2x2 grid with CLS, every number worked by hand.

    Tokens t0 (0,0), t1 (0,1), t2 (1,0), t3 (1,1) at (x, y) = (0,0), (1,0), (0,1), (1,1).
    """
    a = torch.tensor(
        [
            # CLS   t0    t1    t2    t3
            [0.20, 0.10, 0.20, 0.30, 0.20],  # CLS query
            [0.50, 0.25, 0.25, 0.00, 0.00],  # t0 -> renormalised [.5 .5 0 0]
            [0.00, 0.10, 0.20, 0.30, 0.40],  # t1 -> [.1 .2 .3 .4]
            [0.20, 0.00, 0.00, 0.80, 0.00],  # t2 -> [0 0 1 0]
            [0.60, 0.10, 0.10, 0.10, 0.10],  # t3 -> [.25 .25 .25 .25]
        ],
        dtype=torch.float64,
    )
    grid = (2, 2)
    np.testing.assert_allclose(
        attention.spatial_attention(a).numpy(),
        [[0.5, 0.5, 0, 0], [0.1, 0.2, 0.3, 0.4], [0, 0, 1, 0], [0.25, 0.25, 0.25, 0.25]],
        rtol=1e-12,
        atol=1e-15,
    )
    # distances per query: 0.5; 0.1 + 0.3 sqrt2 + 0.4; 0; 0.25 (2 + sqrt2)
    want = (0.5 + (0.5 + 0.3 * math.sqrt(2)) + 0 + 0.25 * (2 + math.sqrt(2))) / 4
    assert want == pytest.approx(0.375 + 0.1375 * math.sqrt(2))
    assert float(attention.attention_distance(a, grid)) == pytest.approx(want, rel=1e-12)
    aligned = attention.aligned_attention(a, grid)
    np.testing.assert_allclose(
        aligned.numpy(),
        [[0.0625, 0.0625, 0.0], [0.0875, 0.4875, 0.125], [0.075, 0.1, 0.0]],
        rtol=1e-12,
        atol=1e-15,
    )
    # column sums .225 .65 .125 -> cx = -.225 + .125; row sums .125 .675 .175 -> cy = .05
    cx, cy = attention.center_of_mass(aligned).tolist()
    assert (cx, cy) == pytest.approx((-0.1, 0.05), abs=1e-12)
    assert float(attention.offset(aligned)) == pytest.approx(math.sqrt(0.0125), rel=1e-12)
    np.testing.assert_allclose(attention.cls_map(a[0], grid).numpy(), [[0.1, 0.2], [0.3, 0.2]])
    np.testing.assert_allclose(
        attention.cls_map(a[0], grid, renormalize=True).numpy(), [[0.125, 0.25], [0.375, 0.25]]
    )
    # averaged spatial-query map: key column sums of the renormalised rows / 4
    np.testing.assert_allclose(
        attention.spatial_attention(a).mean(dim=0).numpy(),
        [0.2125, 0.2375, 0.3875, 0.1625],
        rtol=1e-12,
    )


def test_written_out_3x3_example():
    """3x3 grid with CLS; query (1,1) (the centre) attends 0.5 to itself, 0.25 to (0,0),
    0.25 to (2,2); every other query attends to itself. One token = 1/2 grid unit."""
    s = np.eye(9)
    s[4] = 0
    s[4, 4], s[4, 0], s[4, 8] = 0.5, 0.25, 0.25
    a = embed(s, prefix=1, prefix_mass=0.5)
    # centre query distance: 2 * 0.25 * sqrt2/2 ; others 0 -> mean over 9
    assert float(attention.attention_distance(a, (3, 3))) == pytest.approx(
        0.5 * math.sqrt(2) / 2 / 9, rel=1e-12
    )
    aligned = attention.aligned_attention(a, (3, 3)).numpy()
    want = np.zeros((5, 5))
    want[2, 2] = 8.5 / 9
    want[1, 1] = want[3, 3] = 0.25 / 9
    np.testing.assert_allclose(aligned, want, atol=1e-15)
    assert attention.center_of_mass(torch.from_numpy(aligned)).tolist() == pytest.approx(
        [0, 0], abs=1e-15
    )


def test_float32_input_is_computed_in_float64():
    attn = random_attention((2, 3), 17, seed=8, dtype=torch.float32)
    d32 = attention.attention_distance(attn, (4, 4))
    d64 = attention.attention_distance(attn.to(torch.float64), (4, 4))
    assert d32.dtype == torch.float64
    assert torch.equal(d32, d64)
    assert torch.equal(
        attention.aligned_attention(attn, (4, 4)),
        attention.aligned_attention(attn.double(), (4, 4)),
    )


@pytest.mark.parametrize("grid", [(7, 7), (14, 14), (5, 6)])
def test_distances_exact_on_grids_over_25_tokens(grid):
    gh, gw = grid
    unit = max(gh, gw) - 1
    rows, cols = np.divmod(np.arange(gh * gw), gw)
    exact = np.hypot(cols[:, None] - cols[None], rows[:, None] - rows[None]) / unit
    np.testing.assert_allclose(
        attention.distance_matrix(grid).numpy(), exact, rtol=1e-14, atol=1e-15
    )
    attn = embed(np.eye(gh * gw), prefix=1)
    assert float(attention.attention_distance(attn, grid)) == pytest.approx(0, abs=1e-15)


@pytest.mark.parametrize("grid", [(7, 7), (14, 14)])
def test_distance_on_large_grids_within_cdist_precision(grid):
    """Random attention on large grids against the slow loop."""
    gh, gw = grid
    attn = random_attention((1,), 1 + gh * gw, seed=9)
    got = float(attention.attention_distance(attn, grid)[0])
    assert got == pytest.approx(slow_distance(attn[0].double().numpy(), grid, 1), rel=1e-7)
    eye = embed(np.eye(gh * gw), prefix=1)
    assert float(attention.attention_distance(eye, grid)) == pytest.approx(0, abs=1e-7)


def test_center_of_mass_one_row_grid():
    attn = embed(left_neighbour((1, 4)), prefix=1)
    cx, cy = attention.center_of_mass(attention.aligned_attention(attn, (1, 4))).tolist()
    assert (cx, cy) == pytest.approx((-(3 / 4) / 3, 0.0), abs=1e-12)


# --------------------------------------------------------------------------- zero-mass rows


def zero_mass_attention() -> torch.Tensor:
    """(2 images, 3 heads, T, T) float32, prefix 1, grid 2x3: head 0 of image 0 has two
    queries whose CLS logit is 200 above the rest (spatial mass exactly 0), head 1 of
    image 1 has every query so, head 2 none."""
    torch.manual_seed(5)
    logits = torch.randn(2, 3, 7, 7)
    logits[0, 0, 1:3, 0] = 250.0
    logits[1, 1, 1:, 0] = 250.0
    return torch.softmax(logits, dim=-1)


def test_zero_mass_rows_excluded_from_distance_and_aligned_map():
    attn = zero_mass_attention()
    grid = (2, 3)
    assert (attn[0, 0, 1:3, 1:].sum(-1) == 0).all() and (attn[0, 0, 3:, 1:].sum(-1) > 0).all()
    spatial = attention.spatial_attention(attn, 1)
    assert torch.isfinite(spatial).all()
    np.testing.assert_array_equal(spatial[0, 0, :2].numpy(), 0.0)
    dist = attention.attention_distance(attn, grid, 1)
    aligned = attention.aligned_attention(attn, grid, 1)
    # image 0 head 0: the mean over its 4 remaining queries, from the loop reference
    a = attn[0, 0].double().numpy()
    with pytest.raises(ZeroDivisionError):  # the plain definition divides 0 by 0 (NaN in torch)
        slow_distance(a, grid, 1)
    per_query = []
    for q in range(2, 6):
        row = a[1 + q, 1:] / a[1 + q, 1:].sum()
        per_query.append(sum(row[k] * math.hypot((k % 3 - q % 3) / 2, (k // 3 - q // 3) / 2) for k in range(6)))
    assert float(dist[0, 0]) == pytest.approx(np.mean(per_query), rel=1e-12)
    np.testing.assert_allclose(aligned[0, 0].sum().item(), 1.0, rtol=1e-12)
    assert torch.isfinite(dist[0]).all() and torch.isfinite(dist[1, [0, 2]]).all()
    # no query with spatial mass at all: the one undefined case, NaN
    assert dist[1, 1].isnan() and aligned[1, 1].isnan().all()
    np.testing.assert_array_equal(
        attention.valid_queries(attn, 1).sum(-1).numpy(), [[4, 6, 6], [6, 0, 6]]
    )


def test_averages_divide_by_rows_used():
    from vitscope.attention import heads

    attn = zero_mass_attention()[0:1].double()  # one image: head 0 has 2 zero-mass rows of 6
    grid = (2, 3)
    spatial = attention.spatial_attention(attn, 1)
    aligned_sum = attention.align(spatial, grid)[0].unsqueeze(0)  # (L=1, H, 3, 5)
    zero = torch.tensor([[2, 0, 0]])
    aaam = heads.aaam(aligned_sum, count=1, queries=6, zero_mass_rows=zero)
    np.testing.assert_allclose(aaam.sum(dim=(-2, -1)).numpy(), 1.0, rtol=1e-12)
    torch.testing.assert_close(aaam[0], attention.aligned_attention(attn, grid, 1)[0])
    cls, query_map = attention.averaged_maps(
        attn[:, :, 0].double(), spatial.sum(dim=-2).double(), 1, 6, grid, 1, zero_mass_rows=zero
    )
    np.testing.assert_allclose(query_map.sum(dim=(-2, -1)).numpy(), 1.0, rtol=1e-12)


def test_distance_summary_leaves_out_undefined_images():
    d = torch.tensor([[[0.5, 0.2]], [[float("nan"), 0.4]], [[0.7, 0.6]]], dtype=torch.float64)  # (N=3, L=1, H=2)
    rows = attention.distance_summary(d, (4, 4), patch=16)
    assert [r["images"] for r in rows] == [2, 3]
    assert rows[0]["distance_grid"] == pytest.approx(0.6) and rows[0]["std_grid"] == pytest.approx(0.1)
    assert rows[1]["distance_grid"] == pytest.approx(0.4)
    assert rows[1]["std_grid"] == pytest.approx(np.std([0.2, 0.4, 0.6]))
