"""What a config will cost before any job runs: per model and dataset, the images, the size
of the dump and the extraction's job-hours (`snakemake estimate`, rules/estimate.smk).

The size of a dump is computed from its layout (:data:`vitscope.io.dumps.LAYOUTS`, docs/dumps.md):
every dataset the dump's products hold, shape x itemsize, the shape from the model's geometry
(depth L, heads H, width D, prefix tokens P = CLS + registers, the token grid of its input size)
and the dataset's image count N; plus HDF5's own bytes (:data:`CHUNK_BYTES_OVERHEAD`,
:data:`DATASET_OVERHEAD`, :data:`FILE_OVERHEAD`, measured on dumps of the real extraction,
tests/test_estimate.py). The geometry is read from the config alone (a zoo ``family``/``size``
or a timm name such as ``vit_base_patch16_224``, with ``model_kwargs`` applied): no torch, no
model is built.

The image count of a dataset is, in this order: the rows of its index (results/index/<name>.csv)
when it is built already; ``datasets.<name>.estimate.images``; the size the entry declares
(synthetic classes x per_class, an imagefolder's classes x per_class, a coco max_images, the
split of a synthetic dataset's folder it reads).
Otherwise the estimate stops, naming the key to set. Each row says which one it used.

Job-hours: images / rate, the rate in images/s of a full extraction measured on the device the
config asks for (``estimate.rates``, docs/performance.md) and scaled from the measured
architecture to a larger model's by the forward's multiply-adds per image (:func:`forward_macs`); a
smaller model is taken at the measured rate (its loader, not its forward, may bound it).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..io import dumps
from ..models import zoo
from . import lookups, registry, resources

Config = Mapping[str, Any]

#: HDF5's bytes per chunk beyond the data: the fletcher32 checksum (4) and the chunk's share of the
#: chunk index and of the file's metadata blocks; fitted to dumps of the real extraction of test_vit
#: (40 and 160 images, every default product, tokens only, registers; tests/test_estimate.py)
CHUNK_BYTES_OVERHEAD = 104
#: object header, filter pipeline, attributes and chunk index root of one dataset (fitted, as above)
DATASET_OVERHEAD = 3400
#: the superblock, the root group and its attributes (provenance) of one dump (fitted, as above)
FILE_OVERHEAD = 2000

#: timm's ViT scale names -> (width, depth, heads)
SCALES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}
#: timm test architectures: (width, depth, heads, patch)
TEST_ARCHS: dict[str, tuple[int, int, int, int]] = {"test_vit": (64, 6, 2, 16)}
_ARCH = re.compile(r"^(?:vit|deit|beit|deit3)_(tiny|small|base|large|huge)_patch(\d+)")

#: dtypes of the datasets a layout leaves without one (written whole after the pass)
WHOLE_DTYPES: dict[str, Any] = {
    "attention/zero_mass_rows": np.int64,
    "attention/cls_sum": np.float64,
    "attention/aligned_sum": np.float64,
    "attention/spatial_query_sum": np.float64,
    "attention/sink_sum": np.float64,
    "exemplars/position": np.int64,
    "cka/index": np.int64,
    "objects/image": np.int64,
    "objects/category": np.int64,
    "objects/annotation": np.int64,
}
#: shapes of those datasets a layout gives none for
WHOLE_SHAPES = {
    "attention/zero_mass_rows": lambda d: (d.blocks, d.heads),
    "attention/sink_sum": lambda d: (d.blocks, d.heads, d.prefix + 1),
    "exemplars/position": lambda d: (d.exemplars,),
    "cka/index": lambda d: (d.minibatches, d.minibatch),
    "objects/image": lambda d: (d.objects,),
}
#: bytes of a COCO category name (fixed-length strings: the longest, 'baseball glove', is 14)
CATEGORY_NAME_BYTES = 14
#: bytes of an image path when the index is not built: the root, '/', a class folder and a file name
PATH_TAIL_BYTES = 40
#: COCO objects per image when the annotation file is absent: COCO val2017 has 36,781 instances on 5,000 images
OBJECTS_PER_IMAGE = 7.4


@dataclass(frozen=True)
class Geometry:
    """What the dump's shapes need of a model: width D, depth L, heads H, patch, prefix P, grid (gh, gw)."""

    width: int
    depth: int
    heads: int
    patch: int
    prefix: int
    grid: tuple[int, int]
    label: str  # the size name the rates are keyed by (B/16), or the architecture


@dataclass(frozen=True)
class Count:
    """Images of a dataset and where the number comes from."""

    images: int
    source: str  # index, datasets.<name>.estimate.images, declared (classes x per_class, ...)
    paths: int  # bytes of the longest image path (fixed-length strings)
    classes: int  # bytes of the longest class name
    objects: int | None = None  # annotated objects kept (product objects)


@dataclass(frozen=True)
class Row:
    """One dump: its model, dataset, images, bytes (largest dataset first) and job-hours."""

    model: str
    dataset: str
    images: int
    images_from: str
    products: tuple[str, ...]
    datasets: dict[str, int]  # dump dataset -> bytes of its data
    bytes: int  # the whole file (data + HDF5's own bytes)
    device: str
    images_per_s: float
    rate_from: str
    hours: float
    jobs: int = 1  # extraction jobs of the dump: datasets.<name>.shards (each 1 / jobs of the hours)


def geometry(alias: str, entry: Mapping[str, Any]) -> Geometry:
    """The geometry of ``models.<alias>`` from the config alone (zoo size or timm name, model_kwargs applied)."""
    kwargs = dict(entry.get("model_kwargs") or {})
    if "family" in entry:
        row = zoo.release(entry["family"], entry.get("size", ""), f"models.{alias}")
        shape = zoo.SIZES[row.size]
        width, depth, heads, patch = shape.width, shape.depth, shape.heads, shape.patch
        kwargs = {**row.model_kwargs, **kwargs}
        label = row.size
    else:
        arch = str(entry.get("arch", ""))
        match = _ARCH.match(arch)
        if arch in TEST_ARCHS:
            width, depth, heads, patch = TEST_ARCHS[arch]
        elif match:
            width, depth, heads = SCALES[match.group(1)]
            patch = int(match.group(2))
        else:
            raise ConfigError(
                f"models.{alias}.arch = {arch!r}: the estimate reads the geometry from the name (timm's "
                f"vit_<{'|'.join(SCALES)}>_patch<P>_..., or test_vit) or from a zoo family and size"
            )
        label = _size_label(width, depth, patch, arch)
    width = int(kwargs.get("embed_dim", width))
    depth = int(kwargs.get("depth", depth))
    heads = int(kwargs.get("num_heads", heads))
    patch = int(kwargs.get("patch_size", patch))
    prefix = (1 if kwargs.get("class_token", True) else 0) + int(kwargs.get("reg_tokens", 0))
    size = entry.get("image_size", zoo.IMAGE_SIZE)
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return Geometry(width, depth, heads, patch, prefix, (h // patch, w // patch), label)


def _size_label(width: int, depth: int, patch: int, arch: str) -> str:
    """"B/16" for a timm name of a zoo size, else the architecture's name."""
    for name, shape in zoo.SIZES.items():
        if (shape.width, shape.depth, shape.patch) == (width, depth, patch):
            return name
    return arch


def forward_macs(geom: Geometry) -> float:
    """Multiply-adds of one image's forward: per block 12 T D^2 (qkv, projection, a 4 D MLP) + 2 T^2 D (attention)."""
    t = geom.prefix + geom.grid[0] * geom.grid[1]
    return geom.depth * (12.0 * t * geom.width**2 + 2.0 * t * t * geom.width)


def count_images(config: Config, dataset: str, index: str | Path | None = None) -> Count:
    """The images of ``dataset`` (see the module docstring for the order), with its string widths."""
    entry = lookups.dataset_entry(config, dataset)
    hint = entry.get("estimate") or {}
    objects = hint.get("objects")
    if index and Path(index).is_file():
        with open(index, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        paths = max((len(r["path"].encode("utf-8")) for r in rows), default=1)
        classes = max((len(r["class"].encode("utf-8")) for r in rows), default=1)
        return Count(len(rows), "index", max(paths, 1), max(classes, 1), objects)
    root = str(entry.get("root", ""))
    classes = max((len(str(c).encode("utf-8")) for c in entry.get("classes") or []), default=9)  # a WNID
    paths = len(root.encode("utf-8")) + PATH_TAIL_BYTES
    if "images" in hint:
        return Count(int(hint["images"]), f"datasets.{dataset}.estimate.images", paths, classes, objects)
    declared = _generated(config, entry) or _declared(entry)
    if declared is not None:
        return Count(declared[0], declared[1], paths, classes, objects)
    raise ConfigError(
        f"datasets.{dataset}: the estimate needs its image count before the index is built; "
        f"set datasets.{dataset}.estimate.images (e.g. 1281167 for ImageNet-1k train)"
    )


def _generated(config: Config, entry: Mapping[str, Any]) -> tuple[int, str] | None:
    """Images of a dataset read from a synthetic dataset's folder (the demo's val, revisited, scenes and images)."""
    folder = lookups.generated(config, entry.get("root", ""))
    if not folder:
        return None
    name = Path(folder).name
    spec = config["datasets"][name].get("synthetic", {})
    classes = spec.get("classes", 6)
    part = Path(entry["root"]).relative_to(folder).as_posix()
    counts = {
        "images": classes * spec.get("per_class", 12),
        "val": classes * spec.get("val_per_class", 0),
        "revisited": classes * (spec.get("retrieval_per_class", 0) + spec.get("retrieval_queries_per_class", 2)),
        "scenes/images": spec.get("scene_images", 0),
    }
    return (counts[part], f"declared (synthetic {name}, {part})") if part in counts else None


def _declared(entry: Mapping[str, Any]) -> tuple[int, str] | None:
    if entry["kind"] == "synthetic":
        spec = entry.get("synthetic", {})
        return spec.get("classes", 6) * spec.get("per_class", 12), "declared (synthetic classes x per_class)"
    if entry["kind"] == "imagefolder" and entry.get("classes") and "per_class" in entry:
        return len(entry["classes"]) * entry["per_class"], "declared (classes x per_class, at most)"
    if entry["kind"] == "coco" and "max_images" in entry:
        return entry["max_images"], "declared (max_images, at most)"
    return None


def coco_objects(annotations: str | Path) -> int | None:
    """Non-crowd annotations of a COCO file when it exists (the objects a dump keeps, at most), else None."""
    path = Path(annotations)
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    return sum(1 for a in data.get("annotations", []) if not a.get("iscrowd"))


def dump_datasets(geom: Geometry, count: Count, products: list[str], exemplars: int, cka_batch: int,
                  objects: int = 0, tokens: str = "both",
                  token_dtype: str = "float32") -> dict[str, tuple[tuple[int, ...], int]]:
    """Every dataset of the dump: name -> (shape, itemsize), in the order of docs/dumps.md.

    ``tokens`` / ``token_dtype``: the dataset's token storage (``datasets.<name>.tokens`` and
    ``token_dtype``, :func:`vitscope.io.dumps.token_storage`): the token datasets it does not keep are
    left out, the kept ones take that dtype's itemsize."""
    n = count.images
    dims = dumps.Dims(
        images=n, grid=geom.grid, prefix=geom.prefix, blocks=geom.depth, heads=geom.heads, width=geom.width,
        exemplars=min(exemplars, n), minibatches=n // cka_batch, minibatch=cka_batch, objects=objects,
    )
    out: dict[str, tuple[tuple[int, ...], int]] = {
        "images/path": ((n,), count.paths),
        "images/label": ((n,), 8),
        "images/class": ((n,), count.classes),
    }
    for layout in dumps.LAYOUTS.values():
        if layout.name not in products:
            continue
        for ds in layout.datasets:
            if ds.name in out or (ds.when is not None and not ds.when(dims)):
                continue
            shape_of = ds.shape or WHOLE_SHAPES.get(ds.name)
            if ds.name == "objects/category_name":
                out[ds.name] = ((objects,), CATEGORY_NAME_BYTES)
                continue
            dtype = ds.dtype if ds.dtype is not None else WHOLE_DTYPES.get(ds.name)
            if shape_of is None or dtype is None:
                raise ConfigError(f"the estimate does not know the shape or dtype of dump dataset {ds.name}")
            out[ds.name] = (tuple(int(v) for v in shape_of(dims)), np.dtype(dtype).itemsize)
    kept = dumps.token_storage({name: (shape, f"V{size}") for name, (shape, size) in out.items()}, tokens, token_dtype)
    return {name: (shape, np.dtype(kind).itemsize) for name, (shape, kind) in kept.items()}


def _chunks(shape: tuple[int, ...], itemsize: int, per_image: bool) -> int:
    """Chunks of a dataset (vitscope.io.dumps.chunk_shape: a row per chunk for the per-image datasets)."""
    if not shape or 0 in shape:
        return 1
    dtype = np.dtype(f"V{itemsize}")
    chunk = dumps.chunk_shape(shape, dtype, rows=1 if per_image else None)
    return math.prod(math.ceil(s / c) for s, c in zip(shape, chunk, strict=True))


def file_bytes(datasets: Mapping[str, tuple[tuple[int, ...], int]]) -> tuple[dict[str, int], int]:
    """(dataset -> bytes of its data, bytes of the file): the data plus HDF5's own bytes."""
    rows = {d.name: d.rows for p in dumps.LAYOUTS.values() for d in p.datasets if d.dtype is not None}
    data = {name: math.prod(shape) * size for name, (shape, size) in datasets.items()}
    total = FILE_OVERHEAD
    for name, (shape, size) in datasets.items():
        chunks = _chunks(shape, size, per_image=name in rows)
        total += data[name] + DATASET_OVERHEAD + CHUNK_BYTES_OVERHEAD * chunks
    return data, total


def rate(config: Config, geom: Geometry) -> tuple[str, float, str]:
    """(device, images/s, where it comes from) of a full extraction of a model of ``geom``."""
    device = "cuda" if resources.model_gpus(config) else "cpu"
    measured = config.get("estimate", {}).get("rates", {}).get(device) or {}
    if not measured:
        raise ConfigError(f"estimate.rates.{device} is empty: give the measured images/s of one architecture")
    if geom.label in measured:
        return device, float(measured[geom.label]), f"estimate.rates.{device}.{geom.label}"
    ref, value = next(iter(measured.items()))
    if ref not in zoo.SIZES:
        raise ConfigError(f"estimate.rates.{device}: {ref!r} is not a zoo size ({', '.join(zoo.SIZES)})")
    shape = zoo.SIZES[ref]
    side = zoo.IMAGE_SIZE // shape.patch
    base = Geometry(shape.width, shape.depth, shape.heads, shape.patch, 1, (side, side), ref)
    # a model of fewer multiply-adds is not taken faster than the measured one (the loader may bound it)
    scale = min(1.0, forward_macs(base) / forward_macs(geom))
    return device, float(value) * scale, f"{ref} x multiply-adds" if scale < 1 else f"{ref}, not faster"


def dump_datasets_of_config(config: Config) -> list[str]:
    """The datasets that get a dump: those of every analysis reading dumps (all but the ones that run a
    model themselves, registry class MODEL: spair, davis) and the k-NN memory bank, in config order."""
    wanted: set[str] = set()
    for analysis in registry.ANALYSES.values():
        if registry.MODEL in analysis.rules.values():
            continue
        wanted.update(analysis.datasets(config))
    knn = config.get("analyses", {}).get("knn", {})
    if knn.get("datasets") and knn.get("train"):
        wanted.add(knn["train"])
    return [name for name in config["datasets"] if name in wanted]


def estimate(config: Config, indexes: Mapping[str, str] | None = None) -> list[Row]:
    """One :class:`Row` per (model, dataset) dump the config makes; ``indexes``: dataset -> its index CSV."""
    indexes = indexes or {}
    extract = config["extract"]
    rows = []
    counts = {d: count_images(config, d, indexes.get(d)) for d in dump_datasets_of_config(config)}
    for alias, entry in config["models"].items():
        geom = geometry(alias, entry)
        device, per_s, rate_from = rate(config, geom)
        for dataset, count in counts.items():
            products = list(lookups.products(config, dataset))
            objects = 0
            if "objects" in products:
                objects = count.objects if count.objects is not None else coco_objects(
                    lookups.dataset_entry(config, dataset).get("annotations", "")
                )
                if objects is None:
                    objects = round(OBJECTS_PER_IMAGE * count.images)
            entry = lookups.dataset_entry(config, dataset)
            shapes = dump_datasets(
                geom, count, products, extract["exemplars"], extract["cka_batch_size"], objects,
                entry.get("tokens", "both"), entry.get("token_dtype", "float32"),
            )
            data, total = file_bytes(shapes)
            rows.append(Row(
                alias, dataset, count.images, count.source, tuple(products),
                dict(sorted(data.items(), key=lambda kv: -kv[1])), total, device, per_s, rate_from,
                count.images / per_s / 3600.0, lookups.shards(config, dataset),
            ))
    return rows


COLUMNS = ("model", "dataset", "images", "images_from", "products", "bytes", "GB", "largest", "device",
           "images_per_s", "rate_from", "job_hours", "jobs")


def table(rows: list[Row]) -> list[dict[str, Any]]:
    """The rows of results/estimate.tsv, a last row ``total``."""
    out = []
    for r in rows:
        name, size = next(iter(r.datasets.items()))
        out.append({
            "model": r.model, "dataset": r.dataset, "images": r.images, "images_from": r.images_from,
            "products": ",".join(r.products), "bytes": r.bytes, "GB": f"{r.bytes / 1e9:.3f}",
            "largest": f"{name} {size / 1e9:.3f} GB", "device": r.device, "images_per_s": f"{r.images_per_s:.4g}",
            "rate_from": r.rate_from, "job_hours": f"{r.hours:.4f}", "jobs": r.jobs,
        })
    total = sum(r.bytes for r in rows)
    out.append({
        "model": "total", "dataset": f"{len(rows)} dumps", "images": sum(r.images for r in rows), "images_from": "",
        "products": "", "bytes": total, "GB": f"{total / 1e9:.3f}", "largest": "",
        "device": ",".join(sorted({r.device for r in rows})), "images_per_s": "", "rate_from": "",
        "job_hours": f"{sum(r.hours for r in rows):.4f}", "jobs": sum(r.jobs for r in rows),
    })
    return out


def _grouped(rows: list[Row], field: str) -> dict[str, list[Row]]:
    """``rows`` by the value of ``field`` (model or dataset), in the order they first appear."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(getattr(r, field), []).append(r)
    return groups


def summary(rows: list[Row]) -> str:
    """What `snakemake estimate` prints: the total, per dataset and per model, and where the image counts come from."""
    total = sum(r.bytes for r in rows)
    hours = sum(r.hours for r in rows)
    devices = ", ".join(sorted({r.device for r in rows})) or "-"
    lines = [f"Estimate: {len(rows)} dumps, {total / 1e12:.2f} TB ({total / 2**40:.2f} TiB), "
             f"{hours:.1f} job-hours of extraction on {devices} (at the rates of estimate.rates, docs/performance.md)"]
    by_dataset = _grouped(rows, "dataset")
    lines.append(f"  {'dataset':<20} {'images':>10}  {'GB, all models':>15} {'job-hours':>10}  images from")
    for name, group in by_dataset.items():
        lines.append(f"  {name:<20} {group[0].images:>10}  {sum(r.bytes for r in group) / 1e9:>15.1f} "
                     f"{sum(r.hours for r in group):>10.2f}  {group[0].images_from}")
    by_model = _grouped(rows, "model")
    lines.append(f"  {'model':<20} {'GB':>10} {'job-hours':>10}  images/s")
    for name, group in by_model.items():
        lines.append(f"  {name:<20} {sum(r.bytes for r in group) / 1e9:>10.1f} {sum(r.hours for r in group):>10.2f}"
                     f"  {group[0].images_per_s:.4g} ({group[0].rate_from})")
    guessed = [name for name, group in by_dataset.items() if group[0].images_from != "index"]
    if guessed:
        lines.append(f"  not indexed yet (the count is the config's, not the files'): {', '.join(guessed)}")
    return "\n".join(lines) + "\n"


def tsv(rows: list[dict[str, Any]]) -> str:
    """:func:`table`'s rows as tab-separated text with a header line."""
    lines = ["\t".join(COLUMNS)] + ["\t".join(str(row[c]) for c in COLUMNS) for row in rows]
    return "\n".join(lines) + "\n"
