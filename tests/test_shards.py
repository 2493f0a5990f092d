"""vitscope.extract.shards: shard ranges, the fixed-order sums, and sharded extractions merged
into dumps bit-identical to the unsharded one (docs/dumps.md#sharding)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from test_extract import CPU, ENTRIES, NO_CLS, build, make_folder, transform_of

from vitscope.errors import ConfigError, DumpError
from vitscope.extract import run as extract
from vitscope.extract import shards
from vitscope.io import datasets as data
from vitscope.io import dumps

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


# --------------------------------------------------------------------------- sharded extraction


def comparable(value: Any) -> tuple:
    array = np.asarray(value)
    if array.dtype.kind in "OSU":
        return ("text", repr(array.tolist()))
    return (array.dtype.str, array.shape, array.tobytes())


def h5_items(path: Path) -> dict[str, tuple]:
    """Every group's and dataset's attributes, and every dataset's values, comparable bit for bit."""
    items = {}

    def visit(name, obj):
        attrs = {key: comparable(value) for key, value in obj.attrs.items()}
        items[name] = (attrs, comparable(obj[()]) if isinstance(obj, h5py.Dataset) else None)

    with h5py.File(path) as handle:
        visit("/", handle)
        handle.visititems(visit)
    return items


def extract_file(path: Path, entry: dict, entries: list[data.Entry], options: dict, shard=None) -> None:
    spec, model = build(entry)
    meta = {"model": spec.alias, "dataset": "synthetic", **spec.describe()}
    with dumps.create_file(path) as handle:
        extract.run(model, entries, transform_of(spec), handle, extract.ExtractOptions(**options), CPU, meta,
                    shard=shard)


def sharded(tmp_path: Path, entry: dict, entries: list[data.Entry], options: dict, k: int) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    parts = []
    for s in range(1, k + 1):
        parts.append(tmp_path / f"{s}-of-{k}.h5")
        extract_file(parts[-1], entry, entries, options, shard=(s, k))
    merged = tmp_path / f"merged-{k}.h5"
    shards.merge(parts, merged, [e.path for e in entries], [e.label for e in entries], [e.cls for e in entries])
    return merged


@pytest.fixture(scope="module")
def entries(tmp_path_factory) -> list[data.Entry]:
    # N = 14: batches of 4 -> 4 batches, the last of 2 images
    return make_folder(tmp_path_factory.mktemp("images"), (5, 5, 4), seed=2)


OPTIONS = {"batch_size": 4, "cka_batch_size": 4, "exemplars": 5, "order_seed": 3}


@pytest.mark.parametrize("name", ["square", "registers", "no_cls"])
def test_merged_shards_equal_the_unsharded_dump(tmp_path: Path, entries, name: str):
    entry = NO_CLS if name == "no_cls" else ENTRIES[name]
    options = dict(OPTIONS)
    if name == "no_cls":
        options["products"] = ("tokens", "distance", "exemplars", "gram")
    whole = tmp_path / "whole.h5"
    extract_file(whole, entry, entries, options)
    want = h5_items(whole)
    for k in (2, 3, 4):
        merged = sharded(tmp_path / f"k{k}", entry, entries, options, k)
        got = h5_items(merged)
        assert sorted(got) == sorted(want), k
        for key in want:
            assert got[key] == want[key], (k, key)
        dumps.open_dump(merged).close()  # a valid dump


def test_shards_without_gram_feed_index_ranges(tmp_path: Path, entries):
    """Without Gram matrices the fed order is the index order: shard k holds an index range."""
    options = {**OPTIONS, "products": ("tokens", "attention_sums")}
    extract_file(tmp_path / "2-of-3.h5", ENTRIES["square"], entries, options, shard=(2, 3))
    with h5py.File(tmp_path / "2-of-3.h5") as handle:
        assert handle[shards.POSITIONS][...].tolist() == list(range(4, 8))
        assert handle["tokens/cls"].shape[0] == 4


def test_merge_refuses_missing_or_foreign_shards(tmp_path: Path, entries):
    options = {**OPTIONS, "products": ("tokens",)}
    parts = []
    for s in (1, 2):
        parts.append(tmp_path / f"{s}.h5")
        extract_file(parts[-1], ENTRIES["square"], entries, options, shard=(s, 3))
    index = ([e.path for e in entries], [e.label for e in entries], [e.cls for e in entries])
    with pytest.raises(DumpError, match="expected 1 of 1"):
        shards.merge(parts[:1], tmp_path / "m.h5", *index)
    other = tmp_path / "other.h5"
    extract_file(other, ENTRIES["square"], entries, {**options, "products": ("tokens", "distance")}, shard=(3, 3))
    with pytest.raises(DumpError, match="other settings|starts at"):
        shards.merge([*parts, other], tmp_path / "m.h5", *index)
    assert not (tmp_path / "m.h5").exists()
