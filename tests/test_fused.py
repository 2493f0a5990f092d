"""vitscope.extract.fused: the one-pass attention reductions against the torch reference and
a float64 loop written from the definition (docs/protocols.md#attention-analyses).

The Triton kernel runs here through Triton's CPU interpreter (TRITON_INTERPRET=1,
set before Triton is imported, hence a subprocess); on CUDA the same comparison
runs in benchmarks/attention_reductions.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from vitscope.attention import metrics as attention
from vitscope.extract import fused

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")


def slow_reduction(attn: torch.Tensor, prefix: int, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Loops in float64: per-query distance (B, H, G) and the sum over images (H, G, G)."""
    a = attn.double()
    b, h, t, _ = a.shape
    gh, gw = grid
    g = gh * gw
    scale = max(max(gh, gw) - 1, 1)
    per_query = torch.zeros(b, h, g, dtype=torch.float64)
    total = torch.zeros(h, g, g, dtype=torch.float64)
    for i in range(b):
        for j in range(h):
            for q in range(g):
                row = a[i, j, prefix + q, prefix:]
                if prefix:
                    row = row / row.sum()
                for k in range(g):
                    dy, dx = (q // gw - k // gw) / scale, (q % gw - k % gw) / scale
                    per_query[i, j, q] += row[k] * (dx * dx + dy * dy) ** 0.5
                total[j, q] += row
    return per_query, total


@pytest.mark.parametrize(("prefix", "grid"), [(1, (3, 4)), (0, (3, 3)), (5, (2, 3))])
def test_reference_matches_loops(prefix, grid):
    torch.manual_seed(prefix)
    g = grid[0] * grid[1]
    attn = torch.softmax(torch.randn(3, 2, g + prefix, g + prefix) * 3, dim=-1)
    total = torch.zeros(2, g, g, dtype=torch.float64)
    per_query = fused.reduce_reference(attn, prefix, attention.distance_matrix(grid).float(), total, True)
    want_query, want_total = slow_reduction(attn, prefix, grid)
    torch.testing.assert_close(per_query.double(), want_query, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(total, want_total, rtol=1e-6, atol=1e-6)


def test_reference_hand_case():
    """Two keys at distance 1: query 0 attends 1/4 to itself, 3/4 to its neighbour
    (after dropping the CLS column and renormalising) -> distance 0.75; query 1
    attends only to itself -> distance 0."""
    attn = torch.tensor([[[[0.5, 0.5, 0.0], [0.2, 0.2, 0.6], [0.0, 0.0, 1.0]]]])  # (1, 1, 3, 3), prefix 1
    dist = attention.distance_matrix((1, 2)).float()
    total = torch.zeros(1, 2, 2, dtype=torch.float64)
    per_query = fused.reduce_reference(attn, 1, dist, total, True)
    torch.testing.assert_close(per_query, torch.tensor([[[0.75, 0.0]]]))
    torch.testing.assert_close(total, torch.tensor([[[0.25, 0.75], [0.0, 1.0]]], dtype=torch.float64))


def test_without_triton_falls_back(monkeypatch):
    monkeypatch.setenv("VITSCOPE_FUSED", "0")
    assert not fused.available(torch.device("cpu"))
    attn = torch.softmax(torch.randn(2, 1, 5, 5), dim=-1)
    dist = attention.distance_matrix((2, 2)).float()
    got = fused.reduce_spatial(attn, 1, dist, None, True)
    torch.testing.assert_close(got, fused.reduce_reference(attn, 1, dist, None, True), rtol=0, atol=0)


KERNEL_CHECK = r"""
import json, torch
from vitscope.attention import metrics as attention
from vitscope.extract import fused
assert fused.available(torch.device("cpu"))
out = []
for prefix, grid, accumulate, distance in [((1), (3, 4), True, True), (0, (3, 3), False, True),
                                            (5, (2, 3), True, False), (1, (5, 7), True, True)]:
    torch.manual_seed(len(out))
    g = grid[0] * grid[1]
    attn = torch.softmax(torch.randn(3, 2, g + prefix, g + prefix) * 3, dim=-1)
    dist = attention.distance_matrix(grid).float()
    start = torch.rand(2, g, g, dtype=torch.float64)
    t_ref, t_ker = (start.clone(), start.clone()) if accumulate else (None, None)
    ref = fused.reduce_reference(attn, prefix, dist, t_ref, distance)
    ker = fused.reduce_spatial(attn, prefix, dist, t_ker, distance)
    out.append({
        "distance": None if ref is None else (ref - ker).abs().max().item(),
        "none": ker is None,
        "total": None if t_ref is None else (t_ref - t_ker).abs().max().item(),
        "dtype": None if ker is None else str(ker.dtype),
    })
print(json.dumps(out))
"""


@needs_triton
def test_triton_kernel_matches_reference():
    env = {**os.environ, "TRITON_INTERPRET": "1", "VITSCOPE_FUSED": "1"}
    done = subprocess.run([sys.executable, "-c", KERNEL_CHECK], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    cases = json.loads(done.stdout.strip().splitlines()[-1])
    assert [c["none"] for c in cases] == [False, False, True, False]
    for case in cases:
        if case["distance"] is not None:
            assert case["distance"] < 1e-6 and case["dtype"] == "torch.float32"
        if case["total"] is not None:
            assert case["total"] < 1e-6


# --------------------------------------------------------------------------- zero-mass rows


def sink_attention(b: int, h: int, prefix: int, grid: tuple[int, int], seed: int) -> torch.Tensor:
    """float32 softmax rows where some spatial queries have a CLS logit 200 above the rest
    (their spatial mass underflows to exactly 0) and others a gap of 20 (mass ~1e-8)."""
    g = grid[0] * grid[1]
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, h, g + prefix, g + prefix, generator=generator) * 2
    gap = torch.where(torch.rand(b, h, g, generator=generator) < 0.4, 200.0, 20.0)
    gap[0, 0] = 200.0  # one (image, head) with every row zero-mass
    logits[:, :, prefix:, 0] = logits[:, :, prefix:, prefix:].amax(dim=-1) + gap
    return torch.softmax(logits, dim=-1)


def rule_reduction(attn: torch.Tensor, prefix: int, grid: tuple[int, int]):
    """The zero-mass rule (docs/attention.md) in float64 loops: per-query distance
    (NaN for a zero-mass row), the sum over images of the used rows, zero rows per head."""
    a = attn.double()
    b, h, t, _ = a.shape
    gh, gw = grid
    g = gh * gw
    scale = max(max(gh, gw) - 1, 1)
    per_query = torch.full((b, h, g), float("nan"), dtype=torch.float64)
    total = torch.zeros(h, g, g, dtype=torch.float64)
    zeros = torch.zeros(h, dtype=torch.int64)
    for i in range(b):
        for j in range(h):
            for q in range(g):
                row = [float(v) for v in a[i, j, prefix + q, prefix:]]
                mass = sum(row)
                if mass < torch.finfo(torch.float32).tiny:
                    zeros[j] += 1
                    continue
                d = 0.0
                for k in range(g):
                    dy, dx = (q // gw - k // gw) / scale, (q % gw - k % gw) / scale
                    d += row[k] / mass * (dx * dx + dy * dy) ** 0.5
                    total[j, q, k] += row[k] / mass
                per_query[i, j, q] = d
    return per_query, total, zeros


def test_zero_mass_rows_reproduced():
    """Before the rule, one zero-mass row made the distance and the float64 sum NaN."""
    attn = sink_attention(3, 2, 1, (3, 4), seed=0)
    mass = attn[..., 1:, 1:].sum(dim=-1)
    assert (mass == 0).any() and (mass > 0).any()
    assert (attn[..., 1:, 0] >= 0.999999).all()
    naive = attn[..., 1:, 1:] / mass[..., None]  # the old renormalisation
    assert naive.isnan().any()


@pytest.mark.parametrize(("prefix", "grid"), [(1, (3, 4)), (2, (2, 3))])
def test_reference_applies_zero_mass_rule(prefix, grid):
    attn = sink_attention(3, 2, prefix, grid, seed=prefix)
    g = grid[0] * grid[1]
    total = torch.zeros(2, g, g, dtype=torch.float64)
    zeros = torch.zeros(2, dtype=torch.int64)
    per_query = fused.reduce_reference(attn, prefix, attention.distance_matrix(grid).float(), total, True, zeros)
    want_query, want_total, want_zeros = rule_reduction(attn, prefix, grid)
    assert torch.isfinite(total).all()
    torch.testing.assert_close(zeros, want_zeros, rtol=0, atol=0)
    assert int(want_zeros.sum()) > 0
    torch.testing.assert_close(per_query.isnan(), want_query.isnan(), rtol=0, atol=0)
    torch.testing.assert_close(per_query.double(), want_query, rtol=1e-5, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(total, want_total, rtol=1e-6, atol=1e-6)
    # the per-image distance averages the rows used; NaN only for the all-zero (image 0, head 0)
    per_image = per_query.double().nanmean(dim=-1)
    assert per_image[0, 0].isnan() and torch.isfinite(per_image.flatten()[1:]).all()
    torch.testing.assert_close(per_image, attention.attention_distance(attn, grid, prefix), equal_nan=True)


ZERO_MASS_KERNEL_CHECK = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from test_fused import sink_attention
from vitscope.attention import metrics as attention
from vitscope.extract import fused
assert fused.available(torch.device("cpu"))
out = []
for prefix, grid, accumulate, distance in [(1, (3, 4), True, True), (2, (2, 3), True, False), (1, (5, 7), False, True)]:
    attn = sink_attention(3, 2, prefix, grid, seed=prefix)
    g = grid[0] * grid[1]
    dist = attention.distance_matrix(grid).float()
    zero = torch.zeros(2, g, g, dtype=torch.float64)
    t_ref, t_ker = (zero.clone(), zero.clone()) if accumulate else (None, None)
    z_ref, z_ker = torch.zeros(2, dtype=torch.int64), torch.full((2,), 5, dtype=torch.int64)
    ref = fused.reduce_reference(attn, prefix, dist, t_ref, distance, z_ref)
    ker = fused.reduce_spatial(attn, prefix, dist, t_ker, distance, z_ker)
    out.append({
        "zeros": (z_ker - 5).tolist(), "want_zeros": z_ref.tolist(),
        "nan_same": None if ref is None else bool(torch.equal(ref.isnan(), ker.isnan())),
        "distance": None if ref is None else (ref - ker).nan_to_num().abs().max().item(),
        "total": None if t_ref is None else (t_ref - t_ker).abs().max().item(),
        "finite": None if t_ker is None else bool(torch.isfinite(t_ker).all()),
    })
print(json.dumps(out))
"""


@needs_triton
def test_triton_kernel_applies_zero_mass_rule():
    env = {**os.environ, "TRITON_INTERPRET": "1", "VITSCOPE_FUSED": "1"}
    here = os.path.dirname(__file__)
    done = subprocess.run(
        [sys.executable, "-c", ZERO_MASS_KERNEL_CHECK, here], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    cases = json.loads(done.stdout.strip().splitlines()[-1])
    for case in cases:
        assert case["zeros"] == case["want_zeros"] and sum(case["zeros"]) > 0
        if case["distance"] is not None:
            assert case["nan_same"] and case["distance"] < 1e-6
        if case["total"] is not None:
            assert case["finite"] and case["total"] < 1e-6
