"""The dump: one HDF5 file per (model, dataset) holding everything one forward
pass per image records. See docs/dumps.md for the layout; readers use plain
h5py or the helpers here.

Writes go to a temporary name beside the target and are renamed when
complete, so a dump either exists whole or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import shutil
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import DumpError, OutputError

FORMAT_VERSION = 1

#: dataset paths inside a dump, by product
PRODUCT_DATASETS: dict[str, tuple[str, ...]] = {
    "tokens": ("tokens/cls", "tokens/spatial_mean"),
    "cls_attention": ("attention/cls",),
    "distance": ("attention/distance",),
    "attention_sums": (
        "attention/cls_sum", "attention/aligned_sum", "attention/spatial_query_sum", "attention/sink_sum",
    ),
    "exemplars": ("exemplars/position", "exemplars/attention"),
    "gram": ("cka/index",),
    "objects": (
        "objects/features", "objects/image", "objects/category", "objects/category_name", "objects/annotation",
    ),
}
PRODUCTS: tuple[str, ...] = tuple(PRODUCT_DATASETS)
#: products that need a dataset of kind coco (its instance annotations)
COCO_PRODUCTS = frozenset({"objects"})
#: what an extraction records unless told otherwise: every product a plain image list allows
DEFAULT_PRODUCTS: tuple[str, ...] = tuple(p for p in PRODUCTS if p not in COCO_PRODUCTS)
ATTENTION_PRODUCTS = frozenset({"cls_attention", "distance", "attention_sums", "exemplars"})
REPRESENTATIONS = ("cls", "spatial", "all")


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


class DumpWriter:
    """Create the datasets of a dump and fill them batch by batch.

    Per-image datasets are allocated up front for N images (contiguous
    layout, so writes at scattered positions cost no read-modify-write);
    ``write`` takes the dataset positions of a batch, in any order. A shape
    whose first entry is None makes a growable (chunked) dataset that
    ``append`` extends, for rows whose number is known only at the end.
    """

    def __init__(self, handle: h5py.File, n: int, shapes: Mapping[str, tuple[tuple[int | None, ...], Any]]):
        self.handle = handle
        self.n = n
        for name, (shape, dtype) in shapes.items():
            if shape[0] is None:
                row = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
                chunk = (max(1, min(1024, (1 << 20) // max(row, 1))), *shape[1:])
                handle.create_dataset(
                    name, shape=(0, *shape[1:]), maxshape=shape, chunks=chunk, dtype=dtype, track_times=False
                )
            else:
                handle.create_dataset(name, shape=shape, dtype=dtype, track_times=False)

    def write(self, positions: np.ndarray, arrays: Mapping[str, np.ndarray]) -> None:
        """Write rows of per-image datasets at dataset ``positions`` (any order).

        Uses ``write_direct``, which releases the GIL during the I/O, so a writer
        thread does not stall the thread that feeds the accelerator.
        """
        order = np.argsort(positions, kind="stable")
        sorted_pos = positions[order]
        if np.all(np.diff(sorted_pos) == 1):
            dest = np.s_[int(sorted_pos[0]) : int(sorted_pos[-1]) + 1]
        else:
            dest = np.s_[sorted_pos.tolist()]  # increasing row list: one HDF5 selection
        for name, values in arrays.items():
            self.handle[name].write_direct(np.ascontiguousarray(values[order]), dest_sel=dest)

    def write_rows(self, name: str, start: int, values: np.ndarray) -> None:
        """Write ``values`` at rows ``start:start + len(values)`` of dataset ``name``."""
        if len(values):
            self.handle[name].write_direct(
                np.ascontiguousarray(values), dest_sel=np.s_[start : start + len(values)]
            )

    def append(self, name: str, values: np.ndarray) -> None:
        """Append ``values`` (rows) to the growable dataset ``name``."""
        if len(values):
            dataset = self.handle[name]
            start = dataset.shape[0]
            dataset.resize(start + len(values), axis=0)
            dataset.write_direct(np.ascontiguousarray(values), dest_sel=np.s_[start : start + len(values)])

    def put(self, name: str, values: np.ndarray) -> None:
        self.handle.create_dataset(name, data=values, track_times=False)

    def attrs(self, values: Mapping[str, Any], group: str = "/") -> None:
        target = self.handle[group] if group != "/" else self.handle
        for key, value in values.items():
            target.attrs[key] = _attr(value)


def write_images(handle: h5py.File, paths: Sequence[str], labels: Sequence[int], classes: Sequence[str]) -> None:
    """Store the image list of a dump (``images/path``, ``images/label``, ``images/class``)."""
    text = h5py.string_dtype()
    handle.create_dataset("images/path", data=np.array(paths, dtype=object), dtype=text, track_times=False)
    handle.create_dataset("images/label", data=np.asarray(labels, dtype=np.int64), track_times=False)
    handle.create_dataset("images/class", data=np.array(classes, dtype=object), dtype=text, track_times=False)


def open_dump(path: str | Path) -> h5py.File:
    """Open a dump read-only, checking it is one."""
    path = Path(path)
    if not path.is_file():
        raise DumpError(f"dump '{path}' does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise DumpError(f"dump '{path}' is not a readable HDF5 file: {err}") from err
    if handle.attrs.get("format_version") != FORMAT_VERSION:
        version = handle.attrs.get("format_version")
        handle.close()
        raise DumpError(f"dump '{path}' has format_version {version!r}, expected {FORMAT_VERSION}")
    return handle


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
