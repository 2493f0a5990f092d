"""The merge of a sharded extraction's shard files into the dump (docs/dumps.md#sharding).

Per-image rows are written at their dataset positions, per-minibatch and per-object rows
concatenated in the fed order, the exemplars sorted by position, the sums folded from the
shards' tree nodes (:class:`vitscope.extract.shards.TreeSum`) and finished by the code the
unsharded run finishes them with (:func:`vitscope.extract.hooks.attention_sum_datasets`);
the root attributes are shard 1's (:data:`vitscope.extract.shards.FIRST_BATCH_ATTRS`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ..errors import DumpError
from ..io import dumps
from ..io.datasets import read_index
from ..io.dumps import Dims, DumpWriter
from .hooks import attention_sum_datasets
from .run import dataset_shapes
from .shards import FIRST_BATCH_ATTRS, POSITIONS, SHARD_ATTRS, SUMS, TreeSum

log = logging.getLogger(__name__)


def copy_attrs(source: h5py.AttributeManager, target: h5py.AttributeManager, skip: Sequence[str] = ()) -> None:
    """Copy attributes with their HDF5 types unchanged (strings stay the strings they were)."""
    for key in source:
        if key not in skip:
            target.create(key, source[key], dtype=source.get_id(key).dtype)


def _check(handles: Sequence[h5py.File], paths: Sequence[str]) -> int:
    """The image count of a complete, consistent set of shard files (else a DumpError naming one)."""
    shards = len(handles)
    stop = 0
    skip = (*SHARD_ATTRS, *FIRST_BATCH_ATTRS, dumps.DIGEST)
    first = {k: v for k, v in handles[0].attrs.items() if k not in skip}
    for k, (handle, path) in enumerate(zip(handles, paths, strict=True), start=1):
        a = handle.attrs
        if int(a.get("shard", 0)) != k or int(a.get("shards", 0)) != shards:
            raise DumpError(
                f"shard file '{path}' is shard {a.get('shard')!r} of {a.get('shards')!r}, expected {k} of {shards}; "
                f"{dumps.REBUILD}"
            )
        if int(a["shard_start"]) != stop:
            raise DumpError(
                f"shard file '{path}' starts at image {int(a['shard_start'])}, expected {stop}; {dumps.REBUILD}"
            )
        stop = int(a["shard_stop"])
        mine = {key: v for key, v in a.items() if key not in skip}
        differ = sorted(key for key in set(first) | set(mine) if _show(first.get(key)) != _show(mine.get(key)))
        if differ:
            raise DumpError(
                f"shard file '{path}' was extracted with other settings than '{paths[0]}' (attributes "
                f"{', '.join(differ[:5])}); {dumps.REBUILD}"
            )
    return stop


def _show(value: Any) -> Any:
    return repr(np.asarray(value).tolist()) if value is not None else None


def merge(
    shard_paths: Sequence[str | Path],
    output: str | Path,
    paths: Sequence[str],
    labels: Sequence[int],
    classes: Sequence[str],
) -> None:
    """Merge the shard files (in shard order) of one model and dataset into the dump ``output``,
    written atomically; ``paths``, ``labels``, ``classes``: the dataset's index (``images/*``)."""
    names = [str(p) for p in shard_paths]
    handles = [h5py.File(p, "r") for p in names]
    try:
        n = _check(handles, names)
        if n != len(paths):
            raise DumpError(f"shard files cover {n} images, the index has {len(paths)}; {dumps.REBUILD}")
        root = {k: v for k, v in handles[0].attrs.items() if k not in (*SHARD_ATTRS, dumps.DIGEST)}
        products = frozenset(str(p) for p in np.asarray(root["products"]).tolist())
        with dumps.atomic_path(output) as tmp, dumps.create_file(tmp) as out:
            _merge(handles, out, n, root, products, paths, labels, classes)
    finally:
        for handle in handles:
            handle.close()


def _merge(
    handles: Sequence[h5py.File],
    out: h5py.File,
    n: int,
    root: dict[str, Any],
    products: frozenset[str],
    paths: Sequence[str],
    labels: Sequence[int],
    classes: Sequence[str],
) -> None:
    gh, gw = (int(v) for v in root["grid"])
    exemplars = sum(len(h["exemplars/position"]) for h in handles) if "exemplars" in products else None
    minibatches = sum(len(h["cka/index"]) for h in handles) if "gram" in products else None
    minibatch = int(handles[0]["cka"].attrs["batch_size"]) if "gram" in products else None
    dims = Dims(
        images=n, grid=(gh, gw), prefix=int(root["num_prefix_tokens"]), blocks=int(root["num_blocks"]),
        heads=int(root["num_heads"]), width=int(root["width"]), exemplars=exemplars, minibatches=minibatches,
        minibatch=minibatch,
    )
    dumps.write_images(out, paths, labels, classes)
    # the datasets the shards hold, with their dtypes (the token storage of the extraction,
    # vitscope.io.dumps.token_storage, decided which token datasets exist and their dtype)
    shapes = {
        name: (shape, handles[0][name].dtype)
        for name, (shape, _) in dataset_shapes(dims, products).items()
        if name in handles[0]
    }
    writer = DumpWriter(out, n, shapes)
    kinds = {d.name: d.rows for p in dumps.LAYOUTS.values() if p.name in products for d in p.datasets}
    for name, (shape, _) in shapes.items():
        rows = kinds[name]
        if rows == "image":
            for handle in handles:
                positions = handle[POSITIONS][...]
                source = handle[name]
                for start in range(0, len(positions), 256):  # bounded memory
                    part = positions[start : start + 256]
                    writer.write(part, {name: source[start : start + len(part)]})
        elif shape[0] is None:  # growable (objects/features): appended in the fed order
            for handle in handles:
                writer.append(name, handle[name][...])
        elif rows == "exemplar":
            continue  # with exemplars/position, below
        else:  # per-minibatch rows, in the fed order
            at = 0
            for handle in handles:
                values = handle[name][...]
                writer.write_rows(name, at, values)
                at += len(values)
    # what the parts write after the pass, in the order of the file (vitscope.io.dumps.LAYOUTS)
    if "distance" in products or "attention_sums" in products:
        trees: dict[str, TreeSum] = {}
        for key in handles[0][SUMS]:
            trees[key] = TreeSum()
            for handle in handles:
                trees[key].read(handle, key)
        totals = {key: tree.total(torch.zeros(0)) for key, tree in trees.items()}
        for name, value in attention_sum_datasets(totals, (gh, gw), "attention_sums" in products).items():
            writer.put(name, value.numpy())
        if "attention_sums" in products:
            writer.attrs({"count": n, "queries": gh * gw}, group="attention")
    if "exemplars" in products:
        position = np.concatenate([h["exemplars/position"][...] for h in handles])
        maps = np.concatenate([h["exemplars/attention"][...] for h in handles])
        order = np.argsort(position, kind="stable")
        writer.put("exemplars/position", position[order])
        for e, row in enumerate(order.tolist()):
            out["exemplars/attention"][e] = maps[row]
    if "gram" in products:
        writer.put("cka/index", np.concatenate([h["cka/index"][...] for h in handles]))
        copy_attrs(handles[0]["cka"].attrs, out["cka"].attrs)
    if "objects" in products:
        for name in ("objects/image", "objects/category", "objects/annotation"):
            writer.put(name, np.concatenate([h[name][...] for h in handles]))
        text = [v for h in handles for v in h["objects/category_name"].asstr()[...].tolist()]
        writer.put("objects/category_name", np.array(text, dtype=object))
        attrs = [h["objects"].attrs for h in handles]
        writer.attrs(
            {
                **{key: int(sum(int(a[key]) for a in attrs)) for key in ("objects", "annotations", "skipped_empty",
                                                                         "skipped_crowd")},
                "categories": len(np.unique(out["objects/category"][...])),
            },
            group="objects",
        )
        copy_attrs(attrs[0], out["objects"].attrs, skip=("objects", "annotations", "skipped_empty", "skipped_crowd",
                                                          "categories"))
    copy_attrs(handles[0].attrs, out.attrs, skip=(*SHARD_ATTRS, dumps.DIGEST))


def merge_index(shard_paths: Sequence[str | Path], output: str | Path, index: str | Path) -> None:
    """:func:`merge` with the image list of the index CSV ``index`` (the merge_shards rule)."""
    entries = read_index(index)
    start = time.perf_counter()
    merge(shard_paths, output, [e.path for e in entries], [e.label for e in entries], [e.cls for e in entries])
    size = sum(Path(p).stat().st_size for p in shard_paths) / 1e6
    seconds = time.perf_counter() - start
    log.info(
        "merged %d shards (%.1f MB) of %d images into %s in %.1f s",
        len(shard_paths), size, len(entries), output, seconds,
    )
