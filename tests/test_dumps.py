"""vitscope.io.dumps: checksummed datasets, reads that name a damaged dump, consistency checks at open.

One tiny extraction (timm ``test_vit``, 6 blocks, 2 heads, width 64, 4 x 4 grid, every
default product) written the way ``extract_dump`` writes it (:func:`vitscope.io.dumps.create_file`);
each test damages a copy: a flipped bit inside one dataset's raw data, a scrambled
attribute, a dataset with too few rows. Every reader of the workflow must then fail with
a :class:`DumpError` naming the dump (and the dataset or attribute), never return numbers.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from vitscope.attention import exemplars, heads
from vitscope.attention import metrics as attention
from vitscope.errors import DumpError
from vitscope.extract import run as extract
from vitscope.features import cka as features
from vitscope.features import clustering
from vitscope.io import datasets as data
from vitscope.io import dumps
from vitscope.io import preprocess as loading
from vitscope.models import registry as models
from vitscope.tasks import knn

ENTRY = {"arch": "test_vit", "image_size": 64}
CPU = torch.device("cpu")
OPTIONS = {"batch_size": 4, "cka_batch_size": 4, "exemplars": 2}


def make_folder(root: Path, counts: tuple[int, ...] = (4, 4, 2)) -> list[data.Entry]:
    rng = np.random.default_rng(0)
    for k, count in enumerate(counts):
        (root / f"class_{k}").mkdir(parents=True)
        for i in range(count):
            h, w = (int(v) for v in rng.integers(40, 90, size=2))
            Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(root / f"class_{k}/img_{i}.png")
    return data.index_imagefolder(root)


def write_dump(path: Path, entries: list[data.Entry], entry: dict[str, Any] = ENTRY, model_name: str = "tiny") -> None:
    """A dump as extract_dump writes it: checksummed file format, provenance attributes."""
    spec = models.spec_from_config(model_name, entry)
    model, _ = models.build(spec)
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    meta = {"model": model_name, "dataset": "synthetic", **{k: v for k, v in spec.describe().items() if k != "alias"}}
    with dumps.create_file(path) as handle:
        extract.run(model, entries, transform, handle, extract.ExtractOptions(**OPTIONS), CPU, meta)


@pytest.fixture(scope="module")
def entries(tmp_path_factory) -> list[data.Entry]:
    return make_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def pristine(entries, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dump") / "d.h5"
    write_dump(path, entries)
    return path


@pytest.fixture
def dump(pristine, tmp_path) -> Path:
    """A private copy of the pristine dump, to damage."""
    path = tmp_path / "results" / "dumps" / "tiny" / "d.h5"
    path.parent.mkdir(parents=True)
    shutil.copyfile(pristine, path)
    return path


def datasets_of(path: Path) -> list[str]:
    names: list[str] = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(names)


def flip_bit(path: Path, name: str, row: int = 0) -> None:
    """Flip one bit in the middle of the raw data of dataset ``name`` (its chunk ``row``,
    or for contiguous storage, the middle of the data)."""
    with h5py.File(path, "r") as f:
        dataset = f[name]
        if dataset.chunks is None:
            offset, size = dataset.id.get_offset(), dataset.id.get_storage_size()
        else:
            info = dataset.id.get_chunk_info(row)
            offset, size = info.byte_offset, info.size - 4  # the last 4 bytes: the checksum
    assert offset is not None and size > 0
    with open(path, "r+b") as raw:
        raw.seek(offset + size // 2)
        byte = raw.read(1)[0]
        raw.seek(offset + size // 2)
        raw.write(bytes([byte ^ 0x10]))


def edit(path: Path, change: Callable[[h5py.File], None]) -> None:
    """Apply ``change`` and re-seal: the dump of a writer that wrote inconsistent metadata."""
    with h5py.File(path, "r+") as f:
        change(f)
        dumps.seal(f)


def read_everything(path: Path) -> None:
    with dumps.open_dump(path) as d:
        for name in datasets_of(path):
            d[name][...]


# --------------------------------------------------------------------------- writing


def test_every_dataset_is_checksummed_and_chunked_by_image(pristine, entries):
    names = datasets_of(pristine)
    assert {"tokens/cls", "attention/distance", "cka/blocks/cls", "images/path", "exemplars/attention"} <= set(names)
    n = len(entries)
    with h5py.File(pristine, "r") as f:
        assert f.id.get_create_plist().get_version()[0] == 3  # superblock v3: the 1.10 format, checksummed
        for name in names:
            dataset = f[name]
            assert dataset.fletcher32, name
            assert dataset.chunks is not None, name
            assert np.prod(dataset.chunks) * dataset.dtype.itemsize <= dumps.CHUNK_BYTES, name
            if dataset.shape[0] == n and dataset.ndim > 1:  # per-image: one image row per chunk
                assert dataset.chunks == (1, *dataset.shape[1:]), name
        assert f["images/path"].asstr()[...].tolist() == [e.path for e in entries]
        assert f["images/class"].asstr()[...].tolist() == [e.cls for e in entries]


def test_chunk_shape_splits_large_rows():
    assert dumps.chunk_shape((10, 6, 64), np.float32, rows=1) == (1, 6, 64)
    assert dumps.chunk_shape((10, 6, 64), np.float32) == (10, 6, 64)  # written whole: up to 1 MiB of rows
    assert dumps.chunk_shape((10**6,), np.int64) == (1 << 17,)
    assert dumps.chunk_shape((0, 3), np.int64) == (1, 3)
    assert dumps.chunk_shape((3, 0, 2), np.int64, rows=1) == (1, 1, 2)
    big = dumps.chunk_shape((4, 24, 16, 257, 257), np.float32, rows=1, limit=1 << 20)
    assert big[:2] == (1, 1) and np.prod(big) * 4 <= 1 << 20
    with pytest.raises(ValueError, match="scalar"):
        with h5py.File("unused.h5", "w", driver="core", backing_store=False) as f:
            dumps.create_dataset(f, "x", (), np.float32)


def test_two_extractions_are_bit_identical(pristine, entries, tmp_path):
    """Chunking, checksums and the HDF5 1.10 format keep the file's bytes a function of
    its contents (no timestamps in any object header)."""
    again = tmp_path / "again.h5"
    write_dump(again, entries)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(pristine.read_bytes()).digest()


def test_pristine_dump_opens_and_validates(pristine):
    with dumps.open_dump(pristine) as d:
        assert isinstance(d["attention/distance"], dumps.CheckedDataset)
        assert isinstance(d["attention"]["distance"], dumps.CheckedDataset)
        assert dumps.geometry(d)["grid"] == (4, 4)
    read_everything(pristine)


@pytest.mark.parametrize("entry", [{"arch": "test_vit", "image_size": [48, 80]},
                                   {"arch": "test_vit", "image_size": 64, "model_kwargs": {"reg_tokens": 2}}])
def test_other_geometries_validate(entry, entries, tmp_path):
    write_dump(tmp_path / "d.h5", entries, entry)
    read_everything(tmp_path / "d.h5")


# --------------------------------------------------------------------------- flipped bits


def test_every_dataset_fails_its_checksum_naming_the_dump(pristine, tmp_path):
    for name in datasets_of(pristine):
        path = tmp_path / f"{name.replace('/', '_')}.h5"
        shutil.copyfile(pristine, path)
        flip_bit(path, name)
        with dumps.open_dump(path) as d, pytest.raises(DumpError) as caught:
            d[name][...]
        message = str(caught.value)
        assert str(path) in message and f"dataset {name} fails its checksum" in message, message
        assert "rerun" in message


def _distance(d: h5py.File) -> Any:  # workflow/scripts/attention_distance.py
    geom = dumps.geometry(d)
    return attention.distance_summary(
        torch.from_numpy(dumps.require(d, "attention/distance")[...]), geom["grid"], geom["patch"][0]
    )


def _clustering(d: h5py.File) -> Any:  # workflow/scripts/clustering.py
    values = {rep: dumps.require(d, name)[...] for rep, name in clustering.CLUSTER_FEATURES.items()}
    return clustering.clustering_rows(values, dumps.require(d, "images/label")[...], "tiny", seed=0, n_init=1)


def _knn(d: h5py.File) -> Any:  # workflow/scripts/knn.py, the dump as bank and queries; one block read at a time
    labels = knn.check_labels(d, d)
    bank = dumps.require(d, "tokens/cls")
    return knn.block_rows(bank, labels["train"], bank, labels["val"], "tiny", labels["num_classes"], (1, 2))


def _cka(d: h5py.File) -> Any:  # workflow/scripts/cka_pair.py, the dump against itself
    return features.pair_cka(d, d)


def _aaam(d: h5py.File) -> Any:  # workflow/scripts/aaam.py
    sums = d["attention"]
    return heads.aaam(torch.from_numpy(dumps.require(d, "attention/aligned_sum")[...]),
                      count=int(sums.attrs["count"]), queries=int(sums.attrs["queries"]))


def _maps(d: h5py.File) -> Any:  # workflow/scripts/attention_maps.py
    geom, sums = dumps.geometry(d), d["attention"]
    return attention.averaged_maps(
        torch.from_numpy(dumps.require(d, "attention/cls_sum")[...]),
        torch.from_numpy(dumps.require(d, "attention/spatial_query_sum")[...]),
        count=int(sums.attrs["count"]), queries=int(sums.attrs["queries"]), grid=geom["grid"], prefix=geom["prefix"],
    )


READERS = [
    ("attention/distance", _distance, 0),
    ("tokens/cls", _clustering, 3),
    ("tokens/spatial_mean", _clustering, 5),
    ("images/label", _clustering, 0),
    ("tokens/cls", _knn, 7),
    ("images/class", _knn, 0),
    ("cka/blocks/all", _cka, 1),
    ("cka/norms/spatial", _cka, 0),
    ("cka/index", _cka, 0),
    ("attention/aligned_sum", _aaam, 0),
    ("attention/cls_sum", _maps, 0),
    ("attention/spatial_query_sum", _maps, 0),
    ("exemplars/attention", exemplars.dump_exemplars, 1),
    ("images/path", exemplars.dump_exemplars, 0),
]


@pytest.mark.parametrize(("name", "reader", "row"), READERS, ids=[f"{n}-{r.__name__}" for n, r, _ in READERS])
def test_readers_fail_on_a_flipped_bit(dump, name, reader, row):
    """Before checksums, a flipped bit changed a distance or a purity silently (exit 0)."""
    with dumps.open_dump(dump) as d:
        reader(d)  # the pristine copy reads fine
    flip_bit(dump, name, row)
    with dumps.open_dump(dump) as d, pytest.raises(DumpError, match=f"{dump}': dataset {name} fails its checksum"):
        reader(d)


@pytest.mark.parametrize(("text", "shift"), [(b"token 0", 0), (b"OHDR", 8)])
def test_damaged_attributes_fail_at_open(dump, text, shift):
    """A flipped bit in a string attribute's value (HDF5's global heap: the metadata
    digest) or in an object header (the 1.10 format's metadata checksum) fails the open,
    naming the dump."""
    raw = bytearray(dump.read_bytes())
    at = raw.find(text)
    assert at > 0
    raw[at + shift] ^= 0x01
    dump.write_bytes(bytes(raw))
    with pytest.raises(DumpError, match=f"dump '{dump}'.*rerun"):
        read_everything(dump)


def test_layout_without_checksums_holds_the_same_values_and_is_refused(pristine, entries, tmp_path):
    """``ExtractOptions(checksums=False)`` (benchmarks/extract.py times it) writes the old
    layout: the same values, no fletcher32, and open_dump refuses it."""
    spec = models.spec_from_config("tiny", ENTRY)
    model, _ = models.build(spec)
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    meta = {"model": "tiny", "dataset": "synthetic", **{k: v for k, v in spec.describe().items() if k != "alias"}}
    path = tmp_path / "plain.h5"
    with dumps.create_file(path) as handle:
        extract.run(model, entries, transform, handle, extract.ExtractOptions(**OPTIONS, checksums=False), CPU, meta)
    names = datasets_of(pristine)
    assert datasets_of(path) == names
    with h5py.File(path, "r") as plain, h5py.File(pristine, "r") as checked:
        assert not any(plain[name].fletcher32 for name in names)
        assert all(checked[name].fletcher32 for name in names)
        for name in names:
            np.testing.assert_array_equal(plain[name][...], checked[name][...], err_msg=name)
    with pytest.raises(DumpError, match=f"dump '{path}': datasets .* carry no checksum"):
        dumps.open_dump(path)


def test_unsealed_dump_fails_at_open(dump):
    edit(dump, lambda f: None)
    with h5py.File(dump, "r+") as f:
        del f.attrs[dumps.DIGEST]
    with pytest.raises(DumpError, match=f"dump '{dump}' has no metadata checksum"):
        dumps.open_dump(dump)


# --------------------------------------------------------------------------- consistency at open


def _set(key: str, value: Any) -> Callable[[h5py.File], None]:
    def change(f: h5py.File) -> None:
        f.attrs[key] = value

    return change


def _delete(key: str) -> Callable[[h5py.File], None]:
    def change(f: h5py.File) -> None:
        del f.attrs[key]

    return change


def _short(name: str, rows: int = 1) -> Callable[[h5py.File], None]:
    """Replace ``name`` by a checksummed copy with ``rows`` fewer rows."""

    def change(f: h5py.File) -> None:
        values = f[name][...][:-rows]
        del f[name]
        dumps.create_dataset(f, name, values.shape, values.dtype, data=values)

    return change


def _unchecked(name: str) -> Callable[[h5py.File], None]:
    def change(f: h5py.File) -> None:
        values = f[name][...]
        del f[name]
        f.create_dataset(name, data=values)

    return change


def _group_attr(group: str, key: str, value: Any) -> Callable[[h5py.File], None]:
    def change(f: h5py.File) -> None:
        f[group].attrs[key] = value

    return change


SCRAMBLED = [
    ("grid", _set("grid", [3, 3]), r"attribute 'grid' is \[3, 3\], but image_size \[64, 64\] with patch \[16, 16\]"),
    ("grid-3", _set("grid", [4, 4, 1]), "attribute 'grid' is .*expected 2 integers"),
    ("patch-type", _set("patch", "sixteen"), "attribute 'patch' is .*expected 2 integers"),
    ("blocks-type", _set("num_blocks", "six"), "attribute 'num_blocks' is .*expected an integer"),
    ("blocks-float", _set("num_blocks", 6.5), "attribute 'num_blocks' is .*expected an integer"),
    ("heads-missing", _delete("num_heads"), "attribute 'num_heads' is missing"),
    ("size-missing", _delete("image_size"), "attribute 'image_size' is missing"),
    ("blocks-wrong", _set("num_blocks", 5), r"dataset tokens/cls has shape \(10, 6, 64\), expected \(10, 5, 64\)"),
    ("heads-wrong", _set("num_heads", 3), r"dataset attention/cls has shape"),
    ("version", _set("format_version", 0), "format_version 0"),
    ("tokens-short", _short("tokens/cls"), r"dataset tokens/cls has shape \(9, 6, 64\), expected \(10, 6, 64\)"),
    ("distance-short", _short("attention/distance", 3), r"dataset attention/distance has shape \(7, 6, 2\)"),
    ("labels-short", _short("images/label"), r"dataset images/label has shape \(9,\), expected \(10,\)"),
    ("exemplar-positions-short", _short("exemplars/position"), "dataset exemplars/attention has shape"),
    ("cka-index-short", _short("cka/index"), r"dataset cka/blocks/cls has shape \(2, 6, 4, 4\)"),
    ("count", _group_attr("attention", "count", 7), "attribute attention/count is 7, expected 10"),
    ("unchecked", _unchecked("tokens/cls"), "datasets tokens/cls carry no checksum"),
]


@pytest.mark.parametrize(("change", "message"), [s[1:] for s in SCRAMBLED], ids=[s[0] for s in SCRAMBLED])
def test_scrambled_metadata_fails_at_open_naming_the_dump(dump, change, message):
    """Before: no check at open; a wrong grid read on silently, a scrambled attribute or a
    short dataset failed later with a traceback naming no dump (or not at all)."""
    edit(dump, change)
    with pytest.raises(DumpError, match=f"dump '{dump}'.*{message}.*rerun"):
        dumps.open_dump(dump)


def test_open_missing_or_not_hdf5(tmp_path):
    with pytest.raises(DumpError, match="does not exist"):
        dumps.open_dump(tmp_path / "none.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(DumpError, match=f"dump '{tmp_path / 'junk.h5'}' is not a readable HDF5 file.*rerun"):
        dumps.open_dump(tmp_path / "junk.h5")


def test_seal_only_after_a_complete_write(tmp_path):
    """create_file seals the dump when its with block ends normally; after an error the
    (temporary) file is left unsealed, so nothing runs after the error that could mask it."""
    with pytest.raises(RuntimeError, match="boom"), dumps.create_file(tmp_path / "failed.h5") as handle:
        handle.attrs["x"] = 1
        raise RuntimeError("boom")
    with dumps.create_file(tmp_path / "done.h5") as handle:
        handle.attrs["x"] = 1
    with h5py.File(tmp_path / "failed.h5") as failed, h5py.File(tmp_path / "done.h5") as done:
        assert dumps.DIGEST not in failed.attrs
        assert np.asarray(done.attrs[dumps.DIGEST]).tobytes().hex() == dumps.metadata_digest(done)
