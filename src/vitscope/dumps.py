"""The dump: one HDF5 file per (model, dataset) holding everything one forward
pass per image records. See docs/dumps.md for the layout; readers use plain
h5py or the helpers here.

Writes go to a temporary name beside the target and are renamed when
complete, so a dump either exists whole or not at all.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import DumpError

FORMAT_VERSION = 1

#: dataset paths inside a dump, by product
PRODUCT_DATASETS: dict[str, tuple[str, ...]] = {
    "tokens": ("tokens/cls", "tokens/spatial_mean"),
    "cls_attention": ("attention/cls",),
    "distance": ("attention/distance",),
    "attention_sums": ("attention/cls_sum", "attention/aligned_sum", "attention/spatial_query_sum"),
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


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
