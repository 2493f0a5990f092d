"""Test support: HDF5 files as values comparable bit for bit (dumps, shard merges, Slurm runs)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def comparable(value) -> tuple:
    """An HDF5 value as (dtype, bytes); strings and object arrays by their Python values."""
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
