"""vitscope.extract.shards: shard ranges and the fixed-order sums (docs/dumps.md#sharding);
the merge is tests/test_merge.py."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from vitscope.errors import ConfigError
from vitscope.extract import shards

# --------------------------------------------------------------------------- shard ranges


def test_shard_ranges_cover_the_order_in_whole_batches():
    for n, batch, k in ((14, 4, 2), (14, 4, 3), (14, 4, 4), (100, 8, 5), (9, 8, 2), (64, 8, 8)):
        ranges = [shards.shard_range(n, batch, s, k) for s in range(1, k + 1)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        for (_, stop), (start, _) in zip(ranges, ranges[1:], strict=False):
            assert stop == start and start % batch == 0
        assert all(stop > start for start, stop in ranges)


def test_more_shards_than_batches_is_a_config_error():
    with pytest.raises(ConfigError, match="at most 4 shards"):
        shards.shard_range(14, 4, 1, 5)
    with pytest.raises(ConfigError, match="numbered 1 to 3"):
        shards.shard_range(14, 4, 0, 3)


# --------------------------------------------------------------------------- the fixed-order sums


def _values(groups: int, seed: int = 0) -> list[torch.Tensor]:
    """Values whose float64 sums depend on the order of the additions."""
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(rng.standard_normal(5) * 10.0 ** rng.integers(-8, 8, 5)) for _ in range(groups)]


@pytest.mark.parametrize("groups", [1, 2, 3, 7, 8, 13, 33])
def test_tree_sum_is_the_same_for_every_cut(groups: int):
    values = _values(groups)
    whole = shards.TreeSum()
    for g, value in enumerate(values):
        whole.push(g, value)
    want = whole.total(torch.zeros(5)).numpy()
    rng = np.random.default_rng(groups)
    for _ in range(20):
        cuts = sorted(set(rng.integers(1, groups, size=rng.integers(0, 4)).tolist())) if groups > 1 else []
        bounds = [0, *cuts, groups]
        merged = shards.TreeSum()
        for start, stop in zip(bounds, bounds[1:], strict=False):
            part = shards.TreeSum()
            for g in range(start, stop):
                part.push(g, values[g])
            for level, first, value in part.nodes:  # what a shard file keeps, pushed in shard order
                merged.push(first, value, level)
        assert merged.total(torch.zeros(5)).numpy().tobytes() == want.tobytes(), bounds


def test_tree_sum_order_matters_so_the_tree_is_needed():
    """The sequential sum of the shards' partial sums differs from the unsharded sum: the
    fixed tree is what makes the merge exact (these values are chosen to show it)."""
    values = [torch.tensor([v], dtype=torch.float64) for v in (1e16, 1.0, 1.0, -1e16)]
    whole = shards.TreeSum()
    for g, value in enumerate(values):
        whole.push(g, value)
    naive = values[0] + (values[1] + values[2] + values[3])  # shards [0, 1) and [1, 4) summed, then added
    assert float(whole.total(torch.zeros(1))) == 0.0 and float(naive) == 2.0


def test_tree_sum_refuses_a_gap():
    tree = shards.TreeSum()
    tree.push(0, torch.zeros(1))
    with pytest.raises(ValueError, match="does not follow"):
        tree.push(2, torch.zeros(1))


def test_tree_nodes_round_trip_through_a_file(tmp_path: Path):
    values = _values(6, seed=1)
    tree = shards.TreeSum()
    for g, value in enumerate(values[:5]):
        tree.push(g, value)
    with h5py.File(tmp_path / "t.h5", "w") as handle:
        tree.write(handle, "x")
    back = shards.TreeSum()
    with h5py.File(tmp_path / "t.h5", "r") as handle:
        back.read(handle, "x")
    assert [(lv, s) for lv, s, _ in back.nodes] == [(lv, s) for lv, s, _ in tree.nodes]
    assert back.total(torch.zeros(5)).numpy().tobytes() == tree.total(torch.zeros(5)).numpy().tobytes()
