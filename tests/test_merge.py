"""vitscope.extract.merge: sharded extractions (vitscope.extract.run with ``shard``) merged
into dumps bit-identical to the unsharded one, every dataset and attribute (docs/dumps.md#sharding)."""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest
from h5compare import h5_items
from test_extract import CPU, ENTRIES, NO_CLS, build, make_folder, transform_of

from vitscope.errors import DumpError
from vitscope.extract import merge, shards
from vitscope.extract import run as extract
from vitscope.io import datasets as data
from vitscope.io import dumps

# --------------------------------------------------------------------------- sharded extraction




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
    merge.merge(parts, merged, [e.path for e in entries], [e.label for e in entries], [e.cls for e in entries])
    return merged


@pytest.fixture(scope="module")
def entries(tmp_path_factory) -> list[data.Entry]:
    # N = 14: batches of 4 -> 4 batches, the last of 2 images
    return make_folder(tmp_path_factory.mktemp("images"), (5, 5, 4), seed=2)


OPTIONS = {"batch_size": 4, "cka_batch_size": 4, "exemplars": 5, "order_seed": 3}


@pytest.mark.parametrize("name", ["square", "registers", "no_cls", "square_bf16", "square_cls16"])
def test_merged_shards_equal_the_unsharded_dump(tmp_path: Path, entries, name: str):
    entry = NO_CLS if name == "no_cls" else ENTRIES[name.split("_")[0]]
    options = dict(OPTIONS)
    if name == "no_cls":
        options["products"] = ("tokens", "distance", "exemplars", "gram")
    if name.endswith("_bf16"):  # the first batch's errors against fp32: shard 1's are the dump's
        options["precision"] = "bf16"
    if name.endswith("_cls16"):  # the token storage of a k-NN bank: CLS only, float16
        options.update(tokens="cls", token_dtype="float16")
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
        merge.merge(parts[:1], tmp_path / "m.h5", *index)
    other = tmp_path / "other.h5"
    extract_file(other, ENTRIES["square"], entries, {**options, "products": ("tokens", "distance")}, shard=(3, 3))
    with pytest.raises(DumpError, match="other settings|starts at"):
        merge.merge([*parts, other], tmp_path / "m.h5", *index)
    assert not (tmp_path / "m.h5").exists()
