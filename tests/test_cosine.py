"""vitscope.cosine: the fixed-order float64 cosine and the screening bound that k-NN relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vitscope import cosine


def test_dot64_bits_depend_on_the_two_rows_only() -> None:
    rng = np.random.default_rng(0)
    row = rng.normal(size=50).astype(np.float32)
    bank = rng.normal(size=(97, 50)).astype(np.float32)
    bank[[0, 31, 32, 63, 96]] = row  # block starts, ends and the ragged tail of any SIMD width
    queries = rng.normal(size=(9, 50)).astype(np.float32)
    full = cosine.cosine64(queries[:, None], bank[None])
    assert (full[:, [31, 32, 63, 96]] == full[:, [0]]).all()
    alone = cosine.cosine64(queries[:, None], row[None, None])[:, 0]
    np.testing.assert_array_equal(full[:, 0], alone)
    # the same as summing the float64 products left to right, and within a few ulp of the exact cosine
    q, b = queries[3].astype(np.float64), row.astype(np.float64)
    acc = 0.0
    for x, y in zip(q, b, strict=True):
        acc += x * y
    assert cosine.dot64(queries[3], row) == acc
    exact = math.fsum(q * b) / math.sqrt(math.fsum(q * q) * math.fsum(b * b))
    assert abs(full[3, 0] - exact) <= 3.1 * 52 * 2.0**-53


def test_zero_rows_have_similarity_zero() -> None:
    assert cosine.cosine64(np.zeros(4), np.ones(4)) == 0.0
    np.testing.assert_array_equal(cosine.norms64(np.array([[3.0, 4.0], [0.0, 0.0]])), [5.0, 0.0])


def test_margin_is_twice_the_documented_bound() -> None:
    assert cosine.margin(768, np.float32) == pytest.approx(16 * 770 * 2.0**-24)
    assert cosine.margin(768, np.float64) == pytest.approx(16 * 770 * 2.0**-53)
    assert cosine.margin(200_000, np.float32) == math.inf  # past (D + 2) u = 0.01 nothing is claimed
    # the float32 product of unit rows stays within e = margin / 2 of cosine64 (any kernel; here, this one)
    rng = np.random.default_rng(1)
    for dim in (8, 384, 768):
        x = rng.normal(size=(64, dim)).astype(np.float32)
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        err = np.abs((unit @ unit.T).astype(np.float64) - cosine.cosine64(x[:, None], x[None]))
        assert err.max() <= cosine.margin(dim, np.float32) / 2


def test_floor_to_never_rounds_up() -> None:
    values = np.array([0.1, -0.1, 1 / 3, 0.5, -2.0])
    out = cosine.floor_to(values, np.float32)
    assert out.dtype == np.float32
    assert (out.astype(np.float64) <= values).all()
    assert (np.nextafter(out, np.float32(np.inf)).astype(np.float64) > values).all()  # the largest such
