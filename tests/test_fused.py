"""vitscope.fused: the one-pass attention reductions against the torch reference and
a float64 loop written from the definition (protocols.md 3).

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

from vitscope import attention, fused

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
from vitscope import attention, fused
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
