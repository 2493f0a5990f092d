"""Per-head attention summaries: AAAM, offsets, offset-local heads, CLS-head selection.

Protocols.md, section 3; docs/attention.md states every rule. Notation: L blocks,
H heads, grid gh x gw, aligned canvas (2gh-1) x (2gw-1) with the query at its
centre cell (gh-1, gw-1). Blocks and heads are 0-based along array axes and
1-based in the rows these functions return.

Displacements on the canvas are counted in tokens: cell (row, col) is
(dx, dy) = (col - (gw-1), row - (gh-1)) tokens from the query (x right, y down,
so dy < 0 is "up"). :func:`vitscope.attention.metrics.center_of_mass` gives the same
displacement in grid units, one token = 1 / (max(gh, gw) - 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

from . import metrics

LABELS = ("global", "local", "offset-local")


# ------------------------------------------------------------------ AAAM


def aaam(
    aligned_sum: torch.Tensor, count: int, queries: int, zero_mass_rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Aligned aggregated attention map from a dump's sum: (L, H, 2gh-1, 2gw-1) / rows used.

    Rows used = images x queries minus the (L, H) zero-mass rows left out of the sum
    (``attention/zero_mass_rows``, docs/attention.md; None: none), so each map sums
    to 1 (every aligned row did); float64.
    """
    used = metrics.rows_used(count, queries, zero_mass_rows, aligned_sum.shape[:-2])
    return aligned_sum.to(torch.float64) / used[..., None, None]


def grid_of(canvas_shape: Sequence[int]) -> tuple[int, int]:
    """(2gh-1, 2gw-1) -> (gh, gw)."""
    h, w = canvas_shape[-2:]
    return (h + 1) // 2, (w + 1) // 2


def displacements(canvas_shape: Sequence[int], dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, dy), each (2gh-1, 2gw-1): every canvas cell's displacement from the query in tokens."""
    gh, gw = grid_of(canvas_shape)
    dy = torch.arange(2 * gh - 1, dtype=dtype) - (gh - 1)
    dx = torch.arange(2 * gw - 1, dtype=dtype) - (gw - 1)
    return dx.expand(2 * gh - 1, -1), dy[:, None].expand(-1, 2 * gw - 1)


# ------------------------------------------------------------------ offset-local heads


@dataclass(frozen=True)
class Thresholds:
    """Parameters of the offset-local head detector (docs/attention.md).

    radius: half-width in tokens of the square neighbourhood around the AAAM's peak
        ((2 radius + 1)^2 cells, Chebyshev distance <= radius, clipped to the canvas).
    min_mass: a head is local (centred or offset) when the neighbourhood holds at
        least this fraction of its AAAM mass; otherwise it is global.
    min_shift: a local head is offset-local when the centre of mass of its
        neighbourhood lies at least this many tokens (Euclidean) from the query.
    min_lift: and the neighbourhood must hold at least this many times the share that
        uniform attention's AAAM (:func:`uniform_aaam`, a tent from the grid alone) puts in
        the same cells; on a small grid the tent by itself can pass ``min_mass``.
    """

    radius: int = 1
    min_mass: float = 0.5
    min_shift: float = 0.5
    min_lift: float = 2.0

    def __post_init__(self) -> None:
        if self.radius < 0 or not 0 < self.min_mass <= 1 or self.min_shift < 0 or self.min_lift < 0:
            raise ValueError(f"offset-head thresholds out of range: {self}")


def uniform_aaam(grid: Sequence[int], dtype=torch.float64) -> torch.Tensor:
    """The AAAM uniform attention gives on a gh x gw grid: (2gh-1, 2gw-1), sum 1.

    Every query spreads 1/G over the G = gh gw keys; displacement (dy, dx) exists for
    (gh - |dy|) (gw - |dx|) of the G queries, so the average over queries is
    (gh - |dy|) (gw - |dx|) / G^2: a tent peaked on the query cell, from the grid alone.
    """
    gh, gw = int(grid[0]), int(grid[1])
    rows = gh - (torch.arange(2 * gh - 1, dtype=dtype) - (gh - 1)).abs()
    cols = gw - (torch.arange(2 * gw - 1, dtype=dtype) - (gw - 1)).abs()
    return torch.outer(rows, cols) / float(gh * gw) ** 2


def detect(aligned: torch.Tensor, thresholds: Thresholds = Thresholds()) -> dict[str, torch.Tensor]:
    """Classify heads as global, local (centred) or offset-local from their AAAM.

    aligned: (..., 2gh-1, 2gw-1) AAAM (any positive scale; normalised to sum 1 here).
    The rule, per head:

    1. peak = the canvas cell of largest mass (ties: the one nearest the query,
       then the first in row-major order);
    2. neighbourhood = cells within Chebyshev distance ``radius`` tokens of the peak;
       ``mass`` = its share of the AAAM, (local_dx, local_dy) = its centre of mass in tokens;
    3. ``uniform_mass`` = the share :func:`uniform_aaam` puts in the same cells;
    4. label = global if mass < min_mass or mass < min_lift x uniform_mass, else
       offset-local if |(local_dx, local_dy)| >= min_shift tokens, else local.

    Returns tensors of shape (...): ``cx``, ``cy``, ``offset`` (whole-map centre of
    mass and its norm, grid units, attention.center_of_mass), the same in tokens
    (``cx_tokens``, ``cy_tokens``, ``offset_tokens``),
    ``peak_dx``, ``peak_dy`` (int64 tokens), ``local_dx``, ``local_dy`` (tokens),
    ``mass``, ``uniform_mass`` and ``label`` (int64 index into :data:`LABELS`).
    """
    aligned = aligned.to(torch.float64)
    h, w = aligned.shape[-2:]
    gh, gw = grid_of(aligned.shape)
    lead = aligned.shape[:-2]
    mass_map = (aligned / aligned.sum(dim=(-2, -1), keepdim=True)).reshape(-1, h * w)
    dx, dy = (d.reshape(-1) for d in displacements(aligned.shape))

    top = mass_map.max(dim=-1, keepdim=True).values
    tied = mass_map >= top * (1 - 1e-12)
    key = torch.where(tied, dx**2 + dy**2, torch.inf)
    peak = key.argmin(dim=-1)  # first minimum: row-major among equally near ties
    pdx, pdy = dx[peak], dy[peak]

    near = ((dx[None] - pdx[:, None]).abs() <= thresholds.radius) & (
        (dy[None] - pdy[:, None]).abs() <= thresholds.radius
    )
    local = mass_map * near
    mass = local.sum(dim=-1)
    ldx = (local * dx).sum(dim=-1) / mass
    ldy = (local * dy).sum(dim=-1) / mass

    uniform = (near * uniform_aaam((gh, gw)).reshape(1, -1)).sum(dim=-1)

    label = torch.ones_like(peak)
    label[torch.hypot(ldx, ldy) >= thresholds.min_shift] = 2
    label[(mass < thresholds.min_mass) | (mass < thresholds.min_lift * uniform)] = 0

    com = metrics.center_of_mass(aligned)
    off = torch.linalg.vector_norm(com, dim=-1)
    unit = max(max(gh, gw) - 1, 1)
    out = {
        "cx": com[..., 0],
        "cy": com[..., 1],
        "offset": off,
        "cx_tokens": com[..., 0] * unit,
        "cy_tokens": com[..., 1] * unit,
        "offset_tokens": off * unit,
        "peak_dx": pdx.round().to(torch.int64).reshape(lead),
        "peak_dy": pdy.round().to(torch.int64).reshape(lead),
        "local_dx": ldx.reshape(lead),
        "local_dy": ldy.reshape(lead),
        "mass": mass.reshape(lead),
        "uniform_mass": uniform.reshape(lead),
        "label": label.reshape(lead),
    }
    return out


def direction(dx: int, dy: int) -> str:
    """Words for a displacement in tokens: (-1, 0) -> '1 token left', (1, -1) -> '1 token up-right',
    (-2, 1) -> '1 down, 2 left', (0, 0) -> 'centred'. y grows downwards (rows)."""
    if dx == 0 and dy == 0:
        return "centred"
    vert = "up" if dy < 0 else "down"
    horiz = "left" if dx < 0 else "right"
    ax, ay = abs(dx), abs(dy)

    def tokens(n: int) -> str:
        return f"{n} token" + ("s" if n != 1 else "")

    if ay == 0:
        return f"{tokens(ax)} {horiz}"
    if ax == 0:
        return f"{tokens(ay)} {vert}"
    if ax == ay:
        return f"{tokens(ax)} {vert}-{horiz}"
    return f"{ay} {vert}, {ax} {horiz}"


HEAD_COLUMNS = (
    "block", "head", "cx", "cy", "offset", "cx_tokens", "cy_tokens", "offset_tokens", "peak_dx", "peak_dy",
    "local_dx", "local_dy", "mass", "uniform_mass", "label", "direction", "radius", "min_mass", "min_shift",
    "min_lift",
)


def heads_table(aligned: torch.Tensor, thresholds: Thresholds = Thresholds()) -> list[dict[str, object]]:
    """One row per block and head of an (L, H, 2gh-1, 2gw-1) AAAM: the detection and its thresholds.

    Columns: :data:`HEAD_COLUMNS`; block and head 1-indexed; ``direction`` is the peak's
    displacement in words for local and offset-local heads, empty for global heads.
    """
    found = detect(aligned, thresholds)
    params = asdict(thresholds)
    rows = []
    for b in range(aligned.shape[0]):
        for h in range(aligned.shape[1]):
            label = LABELS[int(found["label"][b, h])]
            pdx, pdy = int(found["peak_dx"][b, h]), int(found["peak_dy"][b, h])
            row: dict[str, object] = {"block": b + 1, "head": h + 1}
            for key in ("cx", "cy", "offset", "cx_tokens", "cy_tokens", "offset_tokens"):
                row[key] = float(found[key][b, h])
            row.update(peak_dx=pdx, peak_dy=pdy)
            for key in ("local_dx", "local_dy", "mass", "uniform_mass"):
                row[key] = float(found[key][b, h])
            row["label"] = label
            row["direction"] = "" if label == "global" else direction(pdx, pdy)
            row.update(params)
            rows.append(row)
    return rows


def with_model(tables: Mapping[str, Sequence[Mapping[str, object]]]) -> list[dict[str, object]]:
    """model -> rows, as one list of rows with a leading ``model`` column, models in the given order."""
    return [{"model": model, **row} for model, rows in tables.items() for row in rows]


# ------------------------------------------------------------------ CLS-map head selection


def map_entropy(maps: torch.Tensor) -> torch.Tensor:
    """Normalised entropy of maps (..., gh, gw) -> (...) in [0, 1].

    Each map is rescaled to sum 1; H = -sum p log p / log(gh gw) (0 log 0 = 0):
    0 for all mass on one token, 1 for a uniform map.
    """
    p = maps.to(torch.float64).flatten(-2)
    p = p / p.sum(dim=-1, keepdim=True)
    terms = torch.where(p > 0, -p * torch.log(p), torch.zeros_like(p))
    return terms.sum(dim=-1) / math.log(p.shape[-1]) if p.shape[-1] > 1 else terms.sum(dim=-1)


def block_range(blocks: int, depth: Sequence[float]) -> tuple[int, int]:
    """1-indexed inclusive block range [max(1, ceil(lo L)), max(first, ceil(hi L))] of a depth fraction."""
    lo, hi = depth
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"depth range must satisfy 0 <= lo <= hi <= 1, got {list(depth)}")
    first = max(1, math.ceil(lo * blocks - 1e-9))
    last = max(first, math.ceil(hi * blocks - 1e-9))
    return first, last


def role(quantile: float) -> str:
    """Name of a selection quantile: 0 -> 'most concentrated', 0.5 -> 'median', 1 -> 'most diffuse'."""
    names = {0.0: "most concentrated", 0.5: "median", 1.0: "most diffuse"}
    return names.get(float(quantile), f"entropy quantile {quantile:g}")


def select_heads(
    entropy: torch.Tensor, depth: Sequence[float] = (0.5, 1.0), quantiles: Sequence[float] = (0.0, 0.5, 1.0)
) -> list[tuple[int, int]]:
    """Heads for the cross-model CLS figure: (block, head) 0-based, one per quantile.

    entropy: (L, H). Candidates are the heads of blocks :func:`block_range` (L, depth);
    they are sorted by (entropy, block, head) and quantile q picks the candidate at
    position floor(q (n - 1) + 1/2). With the defaults: the most concentrated, the
    median and the most diffuse CLS map of the second half of the network.
    """
    blocks, heads = entropy.shape
    first, last = block_range(blocks, depth)
    candidates = sorted(
        (float(entropy[b, h]), b, h) for b in range(first - 1, last) for h in range(heads)
    )
    if len(candidates) < len(quantiles):
        raise ValueError(f"{len(candidates)} candidate heads for {len(quantiles)} quantiles")
    n = len(candidates)
    return [candidates[math.floor(q * (n - 1) + 0.5)][1:] for q in quantiles]


CLS_HEAD_COLUMNS = ("block", "head", "entropy", "candidate", "chosen", "depth_from", "depth_to", "quantiles")


def cls_heads_table(
    cls_maps: torch.Tensor, depth: Sequence[float] = (0.5, 1.0), quantiles: Sequence[float] = (0.0, 0.5, 1.0)
) -> list[dict[str, object]]:
    """Every block and head of (L, H, gh, gw) averaged CLS maps: entropy, whether it is a
    candidate, and its role if chosen (:func:`select_heads`), plus the rule's parameters."""
    entropy = map_entropy(cls_maps)
    first, last = block_range(entropy.shape[0], depth)
    chosen = {bh: role(q) for bh, q in zip(select_heads(entropy, depth, quantiles), quantiles, strict=True)}
    rows = []
    for b in range(entropy.shape[0]):
        for h in range(entropy.shape[1]):
            rows.append(
                {
                    "block": b + 1,
                    "head": h + 1,
                    "entropy": float(entropy[b, h]),
                    "candidate": int(first <= b + 1 <= last),
                    "chosen": chosen.get((b, h), ""),
                    "depth_from": float(depth[0]),
                    "depth_to": float(depth[1]),
                    "quantiles": " ".join(f"{q:g}" for q in quantiles),
                }
            )
    return rows


def chosen_heads(rows: Sequence[Mapping[str, str]], quantiles: Sequence[float]) -> list[tuple[int, int, str]]:
    """(block, head, role) 1-indexed from a cls_heads table, in the order of ``quantiles``."""
    by_role = {r["chosen"]: (int(r["block"]), int(r["head"])) for r in rows if r["chosen"]}
    return [(*by_role[role(q)], role(q)) for q in quantiles]



def candidate_blocks(rows: Sequence[Mapping[str, str]]) -> tuple[int, int]:
    """(first, last) 1-indexed candidate blocks recorded in a cls_heads table."""
    blocks = [int(r["block"]) for r in rows if int(r["candidate"])]
    return min(blocks), max(blocks)
