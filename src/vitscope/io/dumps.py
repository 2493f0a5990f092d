"""The dump: one HDF5 file per (model, dataset) holding everything one forward
pass per image records. See docs/dumps.md for the layout; readers use plain
h5py or the helpers here.

Writes go to a temporary name beside the target and are renamed when
complete, so a dump either exists whole or not at all. Every dataset is
chunked and carries an HDF5 fletcher32 checksum per chunk (:func:`create_dataset`);
:func:`open_dump` checks the file's internal consistency (:func:`validate`) and
turns a failed checksum on any later read into a :class:`DumpError` naming the
dump and the dataset.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DumpError, OutputError

FORMAT_VERSION = 1

#: HDF5 file format bounds of a dump: the 1.10 format checksums its metadata
#: (superblock, object headers with the attributes, chunk indexes)
LIBVER = ("v110", "v110")
#: largest chunk of a dataset, in bytes (a per-image row is split along its next axes above it)
CHUNK_BYTES = 4 << 20
#: what every message about a damaged or inconsistent dump tells the user to do
REBUILD = "delete it and rerun the workflow to rebuild it"

REPRESENTATIONS = ("cls", "spatial", "all")

#: what a dump may keep of the product tokens (``datasets.<name>.tokens``) and in which dtype
#: (``datasets.<name>.token_dtype``); docs/dumps.md#token-storage
TOKEN_DATASETS = {"cls": "tokens/cls", "spatial_mean": "tokens/spatial_mean"}
TOKEN_KINDS = ("cls", "spatial_mean", "both")
TOKEN_DTYPES = ("float32", "float16")

#: the precisions of a forward pass (``extract.precision``, :mod:`vitscope.extract.precision`);
#: a dump records its own in the root attribute ``precision`` (absent: written before, fp32)
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
#: root attributes of a dump not extracted in fp32: per dump dataset, the error of its first
#: batch against the same batch in fp32 (names, max absolute error, max absolute error / max |fp32|)
PRECISION_ERRORS = ("precision_error_datasets", "precision_max_abs_error", "precision_max_rel_error")


def token_storage(shapes: Mapping[str, tuple[Any, Any]], tokens: str, dtype: str) -> dict[str, tuple[Any, Any]]:
    """``shapes`` (name -> (shape, dtype) of the datasets to create) with the token datasets that ``tokens``
    (:data:`TOKEN_KINDS`) does not keep left out and the kept ones stored as ``dtype`` (:data:`TOKEN_DTYPES`)."""
    if tokens not in TOKEN_KINDS or dtype not in TOKEN_DTYPES:
        raise ValueError(f"token storage {tokens!r} / {dtype!r}: choose from {TOKEN_KINDS} / {TOKEN_DTYPES}")
    dropped = {name for kind, name in TOKEN_DATASETS.items() if tokens not in (kind, "both")}
    return {
        name: (shape, np.dtype(dtype) if name in TOKEN_DATASETS.values() else kind)
        for name, (shape, kind) in shapes.items()
        if name not in dropped
    }


# --------------------------------------------------------------------------- the products' layout


@dataclass(frozen=True)
class Dims:
    """The sizes the shapes of a dump's datasets are functions of: the image count, the
    model geometry (the root attributes) and the lengths of the index datasets.

    None: not known. The extraction knows every size before the pass but ``objects``
    (the object rows grow batch by batch); :func:`expected_shapes` reads them from a dump,
    None where it lacks the index dataset.
    """

    images: int  # N, len(images/path)
    grid: tuple[int, int]
    prefix: int  # P, num_prefix_tokens
    blocks: int  # L
    heads: int  # H
    width: int  # D
    exemplars: int | None = None  # E, len(exemplars/position)
    minibatches: int | None = None  # M, rows of cka/index
    minibatch: int | None = None  # b, columns of cka/index
    objects: int | None = None  # O, len(objects/image)

    @property
    def spatial(self) -> int:
        """G = gh * gw spatial tokens."""
        return self.grid[0] * self.grid[1]

    @property
    def tokens(self) -> int:
        """T = P + G tokens."""
        return self.prefix + self.spatial


@dataclass(frozen=True)
class DatasetLayout:
    """One dataset of a product.

    ``shape``: its shape as a function of the dump's :class:`Dims`; a shape holding None
    (a size the dump does not give) is not checked by :func:`validate`, and a None first
    axis makes the extraction create it growable. No ``shape``: not checked.
    ``dtype``: the extraction creates the dataset before the pass with this dtype and
    writes its rows batch by batch; None: it is written whole after the pass.
    ``rows``: what the first axis of a dataset written batch by batch counts: ``image``
    (row i is image i of images/path, written at the batch's positions), ``minibatch``
    (the CKA minibatches of cka/index, written in order), ``object`` (objects/image,
    appended) or ``exemplar``.
    ``when``: the dataset exists only for the geometries where it holds (tokens/registers:
    P > 1); such datasets are not named in :data:`PRODUCT_DATASETS`.
    """

    name: str
    shape: Callable[[Dims], tuple[int | None, ...]] | None = None
    dtype: Any = None
    rows: str = "image"
    when: Callable[[Dims], bool] | None = None


@dataclass(frozen=True)
class ProductLayout:
    """What one dump product stores: its datasets, and what it needs of the extraction
    (``attention``: the attention probabilities, i.e. timm's explicit attention path;
    ``coco``: instance annotations, a dataset of kind coco). How the extraction records
    it is :mod:`vitscope.extract.products`."""

    name: str
    datasets: tuple[DatasetLayout, ...]
    attention: bool = False
    coco: bool = False


_f32, _f64 = np.float32, np.float64
#: every product of the dump format, in the order of the file: the datasets the extraction
#: creates before the pass, and its writes after it, follow it (:func:`register_layout` adds one)
LAYOUTS: dict[str, ProductLayout] = {
    p.name: p
    for p in (
        ProductLayout("tokens", (
            DatasetLayout("tokens/cls", lambda d: (d.images, d.blocks, d.width), _f32),
            DatasetLayout("tokens/spatial_mean", lambda d: (d.images, d.blocks, d.width), _f32),
            DatasetLayout("tokens/registers", lambda d: (d.images, d.blocks, d.prefix - 1, d.width), _f32,
                          when=lambda d: d.prefix > 1),
        )),
        ProductLayout("cls_attention", (
            DatasetLayout("attention/cls", lambda d: (d.images, d.blocks, d.heads, d.tokens), _f32),
        ), attention=True),
        ProductLayout("distance", (
            DatasetLayout("attention/distance", lambda d: (d.images, d.blocks, d.heads), _f64),
            DatasetLayout("attention/zero_mass_rows", when=lambda d: d.prefix > 0),
        ), attention=True),
        ProductLayout("attention_sums", (
            DatasetLayout("attention/cls_sum", lambda d: (d.blocks, d.heads, d.tokens)),
            DatasetLayout(
                "attention/aligned_sum", lambda d: (d.blocks, d.heads, 2 * d.grid[0] - 1, 2 * d.grid[1] - 1)
            ),
            DatasetLayout("attention/spatial_query_sum", lambda d: (d.blocks, d.heads, d.spatial)),
            DatasetLayout("attention/sink_sum"),
            DatasetLayout("attention/zero_mass_rows", when=lambda d: d.prefix > 0),
        ), attention=True),
        ProductLayout("exemplars", (
            DatasetLayout("exemplars/position"),
            DatasetLayout(
                "exemplars/attention", lambda d: (d.exemplars, d.blocks, d.heads, d.tokens, d.tokens), _f32,
                rows="exemplar",
            ),
        ), attention=True),
        ProductLayout("gram", (
            DatasetLayout("cka/index"),
            *(
                DatasetLayout(
                    f"cka/{group}/{rep}", lambda d, k=points: (d.minibatches, k * d.blocks, d.minibatch, d.minibatch),
                    _f64, rows="minibatch",
                )
                for group, points in (("blocks", 1), ("norms", 2))
                for rep in REPRESENTATIONS
            ),
        )),
        ProductLayout("objects", (
            DatasetLayout("objects/features", lambda d: (d.objects, d.blocks, d.width), _f32, rows="object"),
            DatasetLayout("objects/image"),
            DatasetLayout("objects/category", lambda d: (d.objects,)),
            DatasetLayout("objects/category_name", lambda d: (d.objects,)),
            DatasetLayout("objects/annotation", lambda d: (d.objects,)),
        ), coco=True),
    )
}

#: dataset paths inside a dump, by product: those every dump with the product holds
#: (:func:`require` names the product of a missing one)
PRODUCT_DATASETS: dict[str, tuple[str, ...]] = {}
#: the products, in the order of :data:`LAYOUTS`
PRODUCTS: tuple[str, ...] = ()
#: products that need a dataset of kind coco (its instance annotations)
COCO_PRODUCTS: frozenset[str] = frozenset()
#: products that read the attention probabilities
ATTENTION_PRODUCTS: frozenset[str] = frozenset()


def _derive() -> None:
    """Recompute the tables above from :data:`LAYOUTS` (read them as ``dumps.NAME`` to see
    products registered later)."""
    global PRODUCTS, COCO_PRODUCTS, ATTENTION_PRODUCTS
    PRODUCT_DATASETS.clear()
    PRODUCT_DATASETS.update(
        {p.name: tuple(f.name for f in p.datasets if f.when is None) for p in LAYOUTS.values()}
    )
    PRODUCTS = tuple(LAYOUTS)
    COCO_PRODUCTS = frozenset(p.name for p in LAYOUTS.values() if p.coco)
    ATTENTION_PRODUCTS = frozenset(p.name for p in LAYOUTS.values() if p.attention)


def register_layout(layout: ProductLayout) -> ProductLayout:
    """Add a product to the dump format (after those of :data:`LAYOUTS`); normally through
    :func:`vitscope.extract.products.register_product`, which also says how to record it."""
    if layout.name in LAYOUTS and LAYOUTS[layout.name] is not layout:
        raise ValueError(f"dump product {layout.name!r} is already registered")
    LAYOUTS[layout.name] = layout
    _derive()
    return layout


def unregister_layout(name: str) -> None:
    """Remove a product added by :func:`register_layout` (tests)."""
    LAYOUTS.pop(name, None)
    _derive()


_derive()
#: what an extraction records unless told otherwise: every product of :data:`LAYOUTS` a plain
#: image list allows (products registered later are recorded only when named)
DEFAULT_PRODUCTS: tuple[str, ...] = tuple(p for p in PRODUCTS if p not in COCO_PRODUCTS)


def _attr(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        return str(value)  # plain str: numpy cannot store str subclasses (TorchVersion)
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return np.array(value, dtype=h5py.string_dtype())
        return np.asarray(value)
    return value


#: errno values that mean "the disk (or a limit) is full", with what to tell the user
_FULL = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "file too large (file size limit reached)",
    errno.EDQUOT: "disk quota exceeded",
}


def _full_errno(err: BaseException | None) -> int | None:
    """The disk-full errno behind ``err`` or its causes, if any.

    HDF5 reports the C errno only inside its message ("errno = 28"), and h5py may
    raise it as a RuntimeError while closing, with the write error as context.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        code = getattr(err, "errno", None)
        if code in _FULL:
            return code
        match = re.search(r"errno = (\d+)", str(err))
        if match and int(match.group(1)) in _FULL:
            return int(match.group(1))
        err = err.__cause__ or err.__context__
    return None


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def _remove_stale_temps(path: Path) -> None:
    """Remove temporary files of ``path`` left by killed writers.

    A temporary name carries the writer's host and pid; one from this host whose
    process is gone, or from another host (Snakemake runs one job per output at a
    time, so a writer of the same output elsewhere is dead), is stale.
    """
    host = socket.gethostname()
    for tmp in path.parent.glob(f"{glob.escape(_temp_prefix(path))}*"):
        writer_host, _, pid = tmp.name[len(_temp_prefix(path)) :].rpartition("-")
        if writer_host == host and pid.isdigit() and _alive(int(pid)):
            continue
        _remove(tmp)


def _remove(path: Path) -> None:
    """Remove a temporary file or folder (a folder's whole tree; a link, not what it points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched; a
    full disk (or file size limit, or quota) becomes an :class:`OutputError`
    naming ``path``. Temporary files of ``path`` left by a killed writer are
    removed first. The caller may make the temporary a folder (a directory
    output written file by file): it then replaces a folder ``path`` whole, and
    a failure removes its tree.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    tmp = path.with_name(f"{_temp_prefix(path)}{socket.gethostname()}-{os.getpid()}")
    try:
        yield tmp
        if tmp.is_dir() and not tmp.is_symlink() and (path.exists() or path.is_symlink()):
            _remove(path)  # a folder is renamed only onto nothing or an empty folder
        os.replace(tmp, path)
    except Exception as err:
        code = _full_errno(err)
        if code is None or isinstance(err, OutputError):
            raise
        raise OutputError(f"could not write '{path}': {_FULL[code]}; nothing was written") from err
    finally:
        _remove(tmp)


def _to_float16(values: np.ndarray, name: str, path: str) -> np.ndarray:
    """values cast to float16; a finite value beyond its range (65504) is an :class:`OutputError`."""
    out = values.astype(np.float16)
    if not np.isfinite(out).all() and np.isfinite(values).all():
        big = float(np.abs(values).max())
        raise OutputError(
            f"dump '{path}': dataset {name} holds |x| = {big:.4g}, beyond the float16 range (65504); "
            "store it as float32 (datasets.<name>.token_dtype)"
        )
    return out


class DumpWriter:
    """Create the datasets of a dump and fill them batch by batch.

    Per-image datasets are allocated up front for N images, chunked one image
    row per chunk (split further only above :data:`CHUNK_BYTES`), so writes at
    scattered positions fill whole chunks and cost no read-modify-write;
    ``write`` takes the dataset positions of a batch, in any order. A shape
    whose first entry is None makes a growable dataset that ``append``
    extends, for rows whose number is known only at the end. Every dataset is
    made by :func:`create_dataset` (fletcher32 checksum per chunk).
    """

    def __init__(
        self,
        handle: h5py.File,
        n: int,
        shapes: Mapping[str, tuple[tuple[int | None, ...], Any]],
        checksums: bool = True,
    ):
        self.handle = handle
        self.n = n
        self.checksums = checksums
        # Open datasets are kept: closing one flushes its chunk cache, and an HDF5 write error
        # (a full disk) raised while a dataset object is deallocated is lost (and can crash h5py).
        self._open: dict[str, h5py.Dataset] = {}
        for name, (shape, dtype) in shapes.items():
            if shape[0] is None:
                row = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
                chunk = (max(1, min(1024, (1 << 20) // max(row, 1))), *shape[1:])
                create_dataset(handle, name, (0, *shape[1:]), dtype, maxshape=shape, chunks=chunk, checksums=checksums)
            else:  # one image row per chunk: scattered writes fill whole chunks
                shape = tuple(int(v) for v in shape)
                create_dataset(
                    handle, name, shape, dtype, chunks=chunk_shape(shape, dtype, rows=1), checksums=checksums
                )

    def write(self, positions: np.ndarray, arrays: Mapping[str, np.ndarray]) -> None:
        """Write rows of per-image datasets at dataset ``positions`` (any order).

        Into a chunked dataset, one slice per run of consecutive positions (a
        row-list selection costs HDF5 several times more there). Uses ``write_direct``,
        which releases the GIL during the I/O, so a writer thread does not stall
        the thread that feeds the accelerator.
        """
        order = np.argsort(positions, kind="stable")
        sorted_pos = np.asarray(positions)[order]
        breaks = np.flatnonzero(np.diff(sorted_pos) != 1) + 1
        runs = list(zip([0, *breaks.tolist()], [*breaks.tolist(), len(sorted_pos)], strict=True))
        if len(runs) == 1:
            whole = np.s_[int(sorted_pos[0]) : int(sorted_pos[-1]) + 1]
        else:
            whole = np.s_[sorted_pos.tolist()]  # increasing row list: one selection (contiguous datasets)
        for name, values in arrays.items():
            dataset = self.dataset(name)
            rows = np.ascontiguousarray(values[order])
            if dataset.dtype == np.float16 and rows.dtype != np.float16:
                rows = _to_float16(rows, name, self.handle.filename)
            if dataset.chunks is None or len(runs) == 1:
                dataset.write_direct(rows, dest_sel=whole)
                continue
            for start, stop in runs:
                at = int(sorted_pos[start])
                dataset.write_direct(rows, source_sel=np.s_[start:stop], dest_sel=np.s_[at : at + stop - start])

    def write_rows(self, name: str, start: int, values: np.ndarray) -> None:
        """Write ``values`` at rows ``start:start + len(values)`` of dataset ``name``."""
        if len(values):
            self.dataset(name).write_direct(np.ascontiguousarray(values), dest_sel=np.s_[start : start + len(values)])

    def append(self, name: str, values: np.ndarray) -> None:
        """Append ``values`` (rows) to the growable dataset ``name``."""
        if len(values):
            dataset = self.dataset(name)
            start = dataset.shape[0]
            dataset.resize(start + len(values), axis=0)
            dataset.write_direct(np.ascontiguousarray(values), dest_sel=np.s_[start : start + len(values)])

    def dataset(self, name: str) -> h5py.Dataset:
        """Dataset ``name``, kept open for the writer's life (see ``__init__``)."""
        if name not in self._open:
            self._open[name] = self.handle[name]
        return self._open[name]

    def flush(self) -> None:
        """Write every cached chunk and header now, so a full disk fails here as an exception."""
        self.handle.flush()

    def put(self, name: str, values: np.ndarray) -> None:
        """Store a whole array (strings: fixed-length UTF-8) as dataset ``name``."""
        values = np.asarray(values)
        if values.dtype.kind in "OUS":
            create_strings(self.handle, name, [str(v) for v in values.ravel()], checksums=self.checksums)
        else:
            create_dataset(self.handle, name, values.shape, values.dtype, data=values, checksums=self.checksums)

    def attrs(self, values: Mapping[str, Any], group: str = "/") -> None:
        target = self.handle[group] if group != "/" else self.handle
        for key, value in values.items():
            target.attrs[key] = _attr(value)


def write_images(
    handle: h5py.File,
    paths: Sequence[str],
    labels: Sequence[int],
    classes: Sequence[str],
    checksums: bool = True,
) -> None:
    """Store the image list of a dump (``images/path``, ``images/label``, ``images/class``)."""
    create_strings(handle, "images/path", paths, checksums=checksums)
    labels = np.asarray(labels, dtype=np.int64)
    create_dataset(handle, "images/label", labels.shape, np.int64, data=labels, checksums=checksums)
    create_strings(handle, "images/class", classes, checksums=checksums)


def chunk_shape(
    shape: Sequence[int], dtype: Any, rows: int | None = None, limit: int = CHUNK_BYTES
) -> tuple[int, ...]:
    """Chunk of a dataset of ``shape``: ``rows`` rows along the first axis (None: as many
    as fit in 1 MiB, for datasets written whole), the next axes cut down (in order)
    until the chunk holds at most ``limit`` bytes. Zero-length axes get chunk length 1."""
    if not len(shape):
        return ()
    itemsize = np.dtype(dtype).itemsize
    row = int(np.prod([max(1, int(v)) for v in shape[1:]], dtype=np.int64)) * itemsize
    if rows is None:
        rows = max(1, min(int(shape[0]), (1 << 20) // row))
    chunk = [max(1, rows)] + [max(1, int(v)) for v in shape[1:]]
    for axis in range(1, len(chunk)):
        rest = int(np.prod(chunk[axis + 1 :], dtype=np.int64)) * itemsize
        if chunk[axis] * rest <= limit:
            break
        chunk[axis] = max(1, limit // rest)
    return tuple(chunk)


def create_dataset(
    parent: h5py.Group,
    name: str,
    shape: tuple[int, ...],
    dtype: Any,
    data: np.ndarray | None = None,
    maxshape: tuple[int | None, ...] | None = None,
    chunks: tuple[int, ...] | None = None,
    checksums: bool = True,
) -> h5py.Dataset:
    """Create dataset ``name`` of a dump the one way every dump dataset is made:
    chunked (``chunks``, or :func:`chunk_shape`, sized for a dataset written whole), a fletcher32 checksum per chunk,
    no timestamps (the file's bytes depend only on its contents). A zero-length
    axis is made growable (a fixed chunk may not exceed a fixed axis).

    ``checksums=False`` makes the layout dumps had before checksums (contiguous
    unless growable, no fletcher32). It exists only so ``benchmarks/extract.py``
    can time what checksums cost; :func:`open_dump` refuses files without them."""
    if len(shape) == 0:
        raise ValueError(f"dump dataset '{name}': a scalar cannot be chunked (checksummed); store shape (1,)")
    if not checksums:
        return parent.create_dataset(
            name, shape=shape, dtype=dtype, data=data, maxshape=maxshape, chunks=chunks, track_times=False
        )
    chunks = chunks or chunk_shape(shape, dtype)
    maxshape = tuple(maxshape) if maxshape is not None else tuple(shape)
    maxshape = tuple(None if (m is not None and m < c) else m for m, c in zip(maxshape, chunks, strict=True))
    return parent.create_dataset(
        name, shape=shape, dtype=dtype, data=data, maxshape=maxshape, chunks=chunks,
        fletcher32=True, track_times=False,
    )


def create_strings(parent: h5py.Group, name: str, values: Sequence[str], checksums: bool = True) -> h5py.Dataset:
    """A (len(values),) dataset of fixed-length UTF-8 strings (variable-length strings
    live in HDF5's global heap, which no checksum covers); read it with ``.asstr()``."""
    encoded = [str(v).encode("utf-8") for v in values]
    width = max((len(v) for v in encoded), default=0) or 1
    text = h5py.string_dtype("utf-8", width)
    array = np.array(encoded, dtype=text).reshape(len(encoded))
    return create_dataset(parent, name, array.shape, text, data=array, checksums=checksums)


#: root attribute: SHA-256 of every attribute of the dump (:func:`metadata_digest`)
DIGEST = "metadata_sha256"


def metadata_digest(handle: h5py.File) -> str:
    """SHA-256 (hex) of every attribute of every object of a dump but :data:`DIGEST`,
    objects and keys in sorted order. The 1.10 format checksums object headers, but a
    string attribute's value lives in HDF5's global heap, which no checksum covers."""
    names = [""]
    handle.visit(names.append)
    digest = hashlib.sha256()
    for name in sorted(names):
        attrs = handle[name].attrs if name else handle.attrs
        for key in sorted(attrs):
            if name or key != DIGEST:
                digest.update(f"{name}\0{key}\0{_show(attrs[key])!r}\n".encode())
    return digest.hexdigest()


def seal(handle: h5py.File) -> None:
    """Store :func:`metadata_digest` as the root attribute :data:`DIGEST` (the last write of a dump)."""
    handle.attrs[DIGEST] = np.frombuffer(bytes.fromhex(metadata_digest(handle)), dtype=np.uint8)


class NewDump(h5py.File):
    """A dump being written: sealed (:func:`seal`) when closed, unless a ``with`` block
    around it failed (the temporary is then removed; nothing must mask the error)."""

    _failed = False

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self._failed = exc_type is not None
        super().__exit__(exc_type, *rest)

    def close(self) -> None:
        if not self._failed and self.id.valid and self.mode == "r+":
            seal(self)
        super().close()


def create_file(path: str | Path) -> NewDump:
    """A new dump file at ``path`` (normally the temporary of :func:`atomic_path`), in
    the checksummed HDF5 1.10 format (:data:`LIBVER`), sealed when closed."""
    return NewDump(path, "w", libver=LIBVER)


#: what HDF5 says when a checksum fails (a chunk's fletcher32 filter, a metadata checksum)
_CORRUPT = re.compile(r"filter returned failure|checksum|fletcher32", re.IGNORECASE)


def _damaged(path: Any, what: str, err: BaseException) -> DumpError:
    """The DumpError for an HDF5 read that failed on ``what`` of dump ``path``."""
    text = str(err)
    if _CORRUPT.search(text):
        return DumpError(f"dump '{path}': {what} fails its checksum (the file is damaged); {REBUILD}")
    return DumpError(f"dump '{path}': {what} cannot be read ({text}); the file is damaged: {REBUILD}")


class CheckedDataset(h5py.Dataset):
    """A dump's dataset whose reads turn an HDF5 error (a failed fletcher32 checksum
    above all) into a :class:`DumpError` naming the dump and the dataset."""

    def _error(self, err: OSError) -> DumpError:
        return _damaged(self.file.filename, f"dataset {self.name.lstrip('/')}", err)

    def __getitem__(self, args: Any, new_dtype: Any = None) -> Any:
        try:
            return super().__getitem__(args, new_dtype=new_dtype)
        except OSError as err:
            raise self._error(err) from err

    def read_direct(self, dest: np.ndarray, source_sel: Any = None, dest_sel: Any = None) -> None:
        try:
            super().read_direct(dest, source_sel, dest_sel)
        except OSError as err:
            raise self._error(err) from err


class _CheckedItems:
    """``handle[name]`` gives checked datasets and groups."""

    def __getitem__(self, name: Any) -> Any:
        try:
            obj = super().__getitem__(name)  # type: ignore[misc]
        except (OSError, KeyError) as err:  # h5py raises a damaged object header as a KeyError
            if isinstance(err, KeyError) and not _CORRUPT.search(str(err)):
                raise
            where = "the root group" if name == "/" else f"object {str(name).lstrip('/')}"
            raise _damaged(self.file.filename, where, err) from err  # type: ignore[attr-defined]
        if isinstance(obj, h5py.Dataset) and not isinstance(obj, CheckedDataset):
            return CheckedDataset(obj.id, readonly=True)
        if isinstance(obj, h5py.Group) and not isinstance(obj, _CheckedItems):
            return CheckedGroup(obj.id)
        return obj


class CheckedGroup(_CheckedItems, h5py.Group):
    """A group of an open dump (its datasets are :class:`CheckedDataset`)."""


class Dump(_CheckedItems, h5py.File):
    """An open dump (read-only): an ``h5py.File`` whose datasets are :class:`CheckedDataset`."""


def open_dump(path: str | Path) -> Dump:
    """Open a dump read-only, checking it is one and is consistent (:func:`validate`).

    Any later read that fails its checksum is a :class:`DumpError` naming the dump
    and the dataset.
    """
    path = Path(path)
    if not path.is_file():
        raise DumpError(f"dump '{path}' does not exist")
    try:
        handle = Dump(path, "r")
    except OSError as err:
        raise DumpError(f"dump '{path}' is not a readable HDF5 file ({err}); {REBUILD}") from err
    try:
        validate(handle)
    except BaseException:
        handle.close()
        raise
    return handle


def _show(value: Any) -> Any:
    """An attribute value as the user wrote it (lists, plain numbers and strings)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _ints(handle: h5py.File, key: str, count: int | None, minimum: int) -> tuple[int, ...]:
    """Root attribute ``key`` as ``count`` integers >= ``minimum`` (a scalar when count is None)."""
    where = f"dump '{handle.filename}': attribute '{key}'"
    if key not in handle.attrs:
        raise DumpError(f"{where} is missing; {REBUILD}")
    value = np.asarray(handle.attrs[key])
    want = "an integer" if count is None else f"{count} integers"
    if value.dtype.kind not in "iu" or value.shape != (() if count is None else (count,)):
        raise DumpError(f"{where} is {_show(handle.attrs[key])!r}, expected {want} >= {minimum}; {REBUILD}")
    if np.any(value < minimum):
        raise DumpError(f"{where} is {value.tolist()!r}, expected {want} >= {minimum}; {REBUILD}")
    return tuple(int(v) for v in value.ravel())


def expected_shapes(handle: h5py.File) -> dict[str, tuple[int, ...]]:
    """The shape every known dataset of a dump must have (the products' :data:`LAYOUTS`),
    from its root attributes and the lengths of its index datasets (images/path,
    exemplars/position, cka/index, objects/image). Datasets not listed are not checked."""
    n = len(handle["images/path"])
    (gh, gw), (L, H, D, P) = _ints(handle, "grid", 2, 1), (  # noqa: N806
        _ints(handle, "num_blocks", None, 1)[0],
        _ints(handle, "num_heads", None, 1)[0],
        _ints(handle, "width", None, 1)[0],
        _ints(handle, "num_prefix_tokens", None, 0)[0],
    )
    index = handle["cka/index"].shape if "cka/index" in handle else ()
    m, b = (int(index[0]), int(index[1])) if len(index) == 2 else (None, None)
    dims = Dims(
        images=n, grid=(gh, gw), prefix=P, blocks=L, heads=H, width=D,
        exemplars=len(handle["exemplars/position"]) if "exemplars/position" in handle else None,
        minibatches=m, minibatch=b,
        objects=len(handle["objects/image"]) if "objects/image" in handle else None,
    )
    shapes: dict[str, tuple[int, ...]] = {"images/label": (n,), "images/class": (n,)}
    for layout in LAYOUTS.values():
        for dataset in layout.datasets:
            shape = dataset.shape(dims) if dataset.shape is not None else None
            if shape is not None and None not in shape:
                shapes.setdefault(dataset.name, tuple(int(v) for v in shape))  # type: ignore[arg-type]
    return shapes


def validate(handle: h5py.File) -> None:
    """Check an open dump's internal consistency; a :class:`DumpError` naming the dump says what is wrong.

    Checked: ``format_version``; the attributes against their checksum
    (:data:`DIGEST`); the geometry attributes (``grid``, ``patch``,
    ``image_size``: two positive integers each, ``num_blocks``, ``num_heads``,
    ``width``, ``num_prefix_tokens``: integers) and ``grid == image_size // patch``
    per side; that every dataset is checksummed (fletcher32); the shape of every
    known dataset against the image count (``images/path``) and the geometry
    (:func:`expected_shapes`); ``precision`` and its errors (:data:`PRECISION_ERRORS`);
    the ``attention`` group's ``count`` and ``queries``.
    """
    path = handle.filename
    version = handle.attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise DumpError(f"dump '{path}' has format_version {_show(version)!r}, expected {FORMAT_VERSION}; {REBUILD}")
    stored = handle.attrs.get(DIGEST)
    if stored is None:
        raise DumpError(f"dump '{path}' has no metadata checksum (written by an older vitscope); {REBUILD}")
    if np.asarray(stored).tobytes().hex() != metadata_digest(handle):
        raise DumpError(f"dump '{path}': its attributes fail their checksum (the file is damaged); {REBUILD}")
    grid, patch = _ints(handle, "grid", 2, 1), _ints(handle, "patch", 2, 1)
    size = _ints(handle, "image_size", 2, 1)
    if grid != (size[0] // patch[0], size[1] // patch[1]):
        raise DumpError(
            f"dump '{path}': attribute 'grid' is {list(grid)}, but image_size {list(size)} with patch "
            f"{list(patch)} gives {[size[0] // patch[0], size[1] // patch[1]]}; {REBUILD}"
        )
    if "images/path" not in handle or len(handle["images/path"].shape) != 1:
        raise DumpError(f"dump '{path}' has no image list (dataset images/path); {REBUILD}")
    datasets: list[str] = []
    handle.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
    unchecked = [name for name in datasets if not handle[name].fletcher32]
    if unchecked:
        raise DumpError(
            f"dump '{path}': datasets {', '.join(sorted(unchecked)[:5])} carry no checksum "
            f"(written by an older vitscope); {REBUILD}"
        )
    for name, shape in expected_shapes(handle).items():
        if name in handle and handle[name].shape != shape:
            raise DumpError(
                f"dump '{path}': dataset {name} has shape {handle[name].shape}, expected {shape} "
                f"(from the {len(handle['images/path'])} images of images/path and the root attributes); {REBUILD}"
            )
    _validate_precision(handle)
    if "attention" in handle and "attention/cls_sum" in handle:
        group = handle["attention"].attrs
        want = {"count": len(handle["images/path"]), "queries": grid[0] * grid[1]}
        for key, value in want.items():
            got = group.get(key)
            if not isinstance(got, (int, np.integer)) or int(got) != value:
                raise DumpError(
                    f"dump '{path}': attribute attention/{key} is {_show(got)!r}, expected {value}; {REBUILD}"
                )


def _validate_precision(handle: h5py.File) -> None:
    """``precision`` is one of :data:`PRECISIONS` (absent: fp32), and a dump not in fp32 has
    :data:`PRECISION_ERRORS`: one name, one absolute and one relative error per dataset compared."""
    path = handle.filename
    precision = handle.attrs.get("precision", "fp32")
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise DumpError(
            f"dump '{path}': attribute 'precision' is {_show(precision)!r}, expected one of "
            f"{', '.join(PRECISIONS)}; {REBUILD}"
        )
    if precision == "fp32":
        return
    missing = [key for key in PRECISION_ERRORS if key not in handle.attrs]
    if missing:
        raise DumpError(f"dump '{path}' is in {precision} but has no attribute {missing[0]!r}; {REBUILD}")
    lengths = [np.asarray(handle.attrs[key]).shape for key in PRECISION_ERRORS]
    if len({*lengths}) != 1 or len(lengths[0]) != 1:
        raise DumpError(
            f"dump '{path}': attributes {', '.join(PRECISION_ERRORS)} have shapes {lengths}, expected one "
            f"length; {REBUILD}"
        )


def precision_errors(handle: h5py.File) -> dict[str, tuple[float, float]]:
    """dataset -> (max absolute error, max relative error) of the dump's first batch against
    fp32 (:data:`PRECISION_ERRORS`); empty for a dump in fp32."""
    if handle.attrs.get("precision", "fp32") == "fp32":
        return {}
    names, absolute, relative = (np.asarray(handle.attrs[key]) for key in PRECISION_ERRORS)
    return {
        (n.decode() if isinstance(n, bytes) else str(n)): (float(a), float(r))
        for n, a, r in zip(names.tolist(), absolute.tolist(), relative.tolist(), strict=True)
    }


def require(handle: h5py.File, name: str) -> h5py.Dataset:
    """Dataset ``name`` of a dump, or a :class:`DumpError` saying which product to enable."""
    if name not in handle:
        product = next((p for p, names in PRODUCT_DATASETS.items() if name in names), None)
        hint = f" (enable product '{product}' in extract.products)" if product else ""
        raise DumpError(f"dump '{handle.filename}' has no '{name}'{hint}")
    return handle[name]


def zero_mass_rows(handle: h5py.File) -> Any:
    """(L, H) int64 torch tensor ``attention/zero_mass_rows`` (docs/attention.md), or None
    for a dump written before the zero-mass rule (it has no such rows or is NaN anyway)."""
    if "attention/zero_mass_rows" not in handle:
        return None
    import torch

    return torch.from_numpy(handle["attention/zero_mass_rows"][...])


def geometry(handle: h5py.File) -> dict[str, Any]:
    """Grid, patch, prefix, blocks, heads, width of the model that wrote the dump."""
    a = handle.attrs
    return {
        "grid": tuple(int(v) for v in a["grid"]),
        "patch": tuple(int(v) for v in a["patch"]),
        "prefix": int(a["num_prefix_tokens"]),
        "blocks": int(a["num_blocks"]),
        "heads": int(a["num_heads"]),
        "width": int(a["width"]),
    }
