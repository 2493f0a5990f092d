"""One forward pass per image, every block recorded (the dump products).

The model runs with exact attention (timm's fused path never materialises the
probabilities; ``extract.attention``: blockwise or explicit, :mod:`.blockwise`) and
forward hooks on every block read, per batch:

- block outputs (B, T, D)      -> ``tokens``: CLS, mean of spatial tokens, registers;
                                  ``gram``: per-minibatch Gram matrices (cls/spatial/all)
- norm1 / norm2 outputs         -> ``gram`` at the 2L LayerNorm points (full-depth CKA)
- attention probs (B, H, T, T)  -> ``cls_attention``, ``distance``, ``attention_sums``,
                                  ``exemplars``
- block outputs' spatial tokens -> ``objects``: per annotated object (coco datasets), the
                                  mask-weighted mean, weights prepared on the host
                                  (:mod:`vitscope.features.objects`), one batched matmul per block

Everything is reduced on the device inside the hooks, so memory is bounded by
one batch; per-image results stream to the HDF5 file and sums over images are
kept in float64. See docs/dumps.md for the file layout.

The forward runs in ``ExtractOptions.precision`` (:mod:`.precision`); in any precision
but fp32 the first batch runs once more in fp32 through a recorder of its own, and the
dump records each dataset's error against it (docs/dumps.md#precision).
"""


from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import h5py
import numpy as np
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import __version__
from ..errors import ConfigError, ModelError
from ..io import dumps
from ..io.datasets import Entry
from ..io.dumps import DEFAULT_PRODUCTS, FORMAT_VERSION, PRECISION_ERRORS, PRECISIONS, Dims, DumpWriter, write_images
from ..io.preprocess import ImageDataset, collate_objects
from ..models.devices import resolve_device
from ..models.registry import Geometry, geometry, set_fused_attention
from . import blockwise as _blockwise
from . import precision as _precision
from . import products as _products
from . import shards as _shards
from .hooks import Recorder, Setting

if TYPE_CHECKING:
    from ..features.objects import ObjectMasks

log = logging.getLogger(__name__)

#: the values of ``extract.attention`` (:mod:`.blockwise`)
ATTENTION_PATHS = ("blockwise", "explicit")


@dataclass(frozen=True)
class ExtractOptions:
    """Settings of one extraction (the ``extract`` config section)."""

    products: tuple[str, ...] = DEFAULT_PRODUCTS
    batch_size: int = 32
    cka_batch_size: int = 32
    order_seed: int = 0
    exemplars: int = 4
    parity_tolerance: float = 1e-3
    num_workers: int = 0
    #: the forward's matrix products and attention: fp32, tf32, bf16 or fp16 (:mod:`.precision`)
    precision: str = "fp32"
    #: how the attention probabilities are computed: ``blockwise`` (a chunk of images at a time,
    #: the fast path) or ``explicit`` (timm's explicit path for the whole batch, the reference;
    #: :mod:`.blockwise`)
    attention: str = "blockwise"
    #: what the dump keeps of tokens/cls and tokens/spatial_mean (``datasets.<name>.tokens``):
    #: cls, spatial_mean or both; and their storage dtype (``token_dtype``): float32 or float16
    tokens: str = "both"
    token_dtype: str = "float32"
    #: False only in ``benchmarks/extract.py``, to time the dump layout without checksums
    #: (:func:`vitscope.io.dumps.create_dataset`); not a config key
    checksums: bool = True

    def __post_init__(self) -> None:
        known = _products.known()
        unknown = sorted(set(self.products) - set(known))
        if unknown:
            raise ConfigError(f"extract.products: unknown {unknown}; choose from {known}")
        if self.batch_size < 1:
            raise ConfigError(f"extract.batch_size = {self.batch_size} must be >= 1")
        if self.attention not in ATTENTION_PATHS:
            raise ConfigError(f"extract.attention = {self.attention!r}: must be one of {', '.join(ATTENTION_PATHS)}")
        if self.tokens not in dumps.TOKEN_KINDS:
            raise ConfigError(f"tokens = {self.tokens!r}: must be one of {', '.join(dumps.TOKEN_KINDS)}")
        if self.token_dtype not in dumps.TOKEN_DTYPES:
            raise ConfigError(f"token_dtype = {self.token_dtype!r}: must be one of {', '.join(dumps.TOKEN_DTYPES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"extract.precision = {self.precision!r}: must be one of {', '.join(PRECISIONS)}")
        for product in _products.PRODUCTS.values():
            if product.check is not None and product.name in self.products:
                product.check(self)

    @property
    def needs_attention(self) -> bool:
        return bool(dumps.ATTENTION_PRODUCTS & set(self.products))


def image_order(n: int, options: ExtractOptions) -> np.ndarray:
    """Order in which images are fed: a seeded permutation when Gram matrices are
    recorded (CKA minibatches must mix classes, and be the same for every model;
    :attr:`vitscope.extract.products.Product.permuted`), else index order."""
    if any(_products.PRODUCTS[p].permuted for p in options.products):
        return np.random.default_rng(options.order_seed).permutation(n)
    return np.arange(n)


@dataclass
class _HostBatch:
    """A batch's products copied (or being copied) to the host."""

    arrays: dict[str, torch.Tensor]
    positions: np.ndarray
    starts: dict[str, int]  # row kind -> the dataset row its first row goes to (:func:`_write_batch`)
    event: Any = None  # torch.cuda.Event marking the end of the copies
    finite: torch.Tensor | None = None  # (B,) bool: every output token of the image is finite (on the host)
    images: torch.Tensor | None = None  # (B, 3, H, W) the batch's input, kept to locate non-finite tokens

    def numpy(self) -> dict[str, np.ndarray]:
        if self.event is not None:
            self.event.synchronize()
        return {name: value.numpy() for name, value in self.arrays.items()}


def _write_batch(
    handle: h5py.File,
    writer: DumpWriter,
    positions: np.ndarray,
    arrays: dict[str, np.ndarray],
    starts: dict[str, int],
    writes: dict[str, str],
) -> None:
    """Write one batch (``writes``: :func:`_row_writes`): rows of images at their dataset
    positions, rows of other kinds (Gram matrices of CKA minibatches) at the next slots
    (``starts``), rows of growable datasets (objects) after the previous batch's."""
    kept = set(writes) | (set(arrays) - set(dumps.TOKEN_DATASETS.values()))  # the token datasets the dump keeps
    arrays = {k: v for k, v in arrays.items() if k in kept}
    writer.write(positions, {k: v for k, v in arrays.items() if writes.get(k, "image") == "image"})
    for name, values in arrays.items():
        how = writes.get(name, "image")
        if how == "append":
            writer.append(name, values)
        elif how != "image":
            writer.write_rows(name, starts[how], values)


def _dims(n: int, geom: Geometry, **sizes: int) -> Dims:
    return Dims(
        images=n, grid=tuple(geom.grid), prefix=geom.prefix, blocks=geom.blocks, heads=geom.heads, width=geom.width,
        **sizes,
    )


def dataset_shapes(dims: Dims, products: frozenset[str]) -> dict[str, Any]:
    """name -> (shape, dtype) of the datasets created before the pass, in the order of
    :data:`vitscope.io.dumps.LAYOUTS` (a None first axis: growable)."""
    shapes: dict[str, Any] = {}
    for layout in dumps.LAYOUTS.values():
        if layout.name in products:
            for dataset in layout.datasets:
                if dataset.dtype is not None and dataset.shape is not None and (
                    dataset.when is None or dataset.when(dims)
                ):
                    shapes[dataset.name] = (dataset.shape(dims), dataset.dtype)
    return shapes


def _shapes(n: int, geom: Geometry, products: frozenset[str], m: int, b: int, e: int) -> dict[str, Any]:
    """:func:`dataset_shapes` for N images, M CKA minibatches of b images, E exemplars."""
    return dataset_shapes(_dims(n, geom, exemplars=e, minibatches=m, minibatch=b), products)


def _row_writes(products: frozenset[str], shapes: dict[str, Any]) -> dict[str, str]:
    """How each dataset created before the pass gets a batch's rows: ``image`` (at the
    images' positions), ``append`` (growable) or the row kind whose next slots take them."""
    rows = {d.name: d.rows for p in dumps.LAYOUTS.values() if p.name in products for d in p.datasets}
    return {
        name: "image" if rows[name] == "image" else "append" if shape[0] is None else rows[name]
        for name, (shape, _) in shapes.items()
    }


def run(
    model: nn.Module,
    entries: Sequence[Entry],
    transform: Any,
    handle: h5py.File,
    options: ExtractOptions,
    device: torch.device,
    meta: dict[str, Any],
    progress: TextIO | None = None,
    objects: ObjectMasks | None = None,
    shard: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Extract every product of ``options`` for the images of ``entries`` into ``handle``.

    ``shard``: (k, K), write shard k (1-indexed) of K instead of the dump: the images of
    :func:`.shards.shard_range` of the fed order, for :func:`.merge.merge` (docs/dumps.md#sharding).

    ``meta`` holds provenance attributes (model, dataset, weights file and its
    SHA-256, normalisation, ...) stored on the file's root. Returns a summary
    (images/s, parity) that is also stored as attributes. The product
    ``objects`` needs ``objects``, the instance masks of the images by dataset
    position (:class:`vitscope.features.objects.ObjectMasks`, for the model's grid).
    """
    n = len(entries)
    if n == 0:
        raise ConfigError(f"dataset {meta.get('dataset', '?')!r} has no images")
    geom = geometry(model)
    products = frozenset(options.products)
    needs_cls = [p for p in _products.known() if _products.PRODUCTS[p].needs_cls]
    if geom.prefix == 0 and products & set(needs_cls):
        raise ModelError(
            f"model {meta.get('model', '?')!r} has no CLS token (num_prefix_tokens = 0): "
            f"products {' and '.join(needs_cls)} need one; remove them from extract.products"
        )
    coco = [p for p in dumps.PRODUCTS if p in products and p in dumps.COCO_PRODUCTS]
    if coco:
        if objects is None:
            raise ConfigError(
                f"dataset {meta.get('dataset', '?')!r}: product '{coco[0]}' needs instance annotations "
                "(a dataset of kind coco)"
            )
        if tuple(objects.grid) != geom.grid:
            raise ConfigError(f"object masks are for grid {tuple(objects.grid)}, the model's grid is {geom.grid}")
    else:
        objects = None
    if _precision.uses_autocast(options.precision) and not torch.amp.is_autocast_available(device.type):
        raise ConfigError(
            f"extract.precision = {options.precision!r}: torch has no autocast on device {device.type!r}; "
            "use fp32 or tf32 there"
        )
    low = options.precision != "fp32"  # the first batch runs once more in fp32: the errors of the precision
    model = model.to(device).eval()
    _limit_heap_arenas()
    order = image_order(n, options)
    begin, end = _shards.shard_range(n, options.batch_size, *shard) if shard else (0, n)
    fed = order[begin:end]
    setting = Setting(geom, options, products, device, n, fed, objects, start=begin, shard=shard is not None)
    recorder = Recorder(model, setting, _products.parts(products))
    sizes = {k: v for part in recorder.parts.values() for k, v in part.sizes().items()}

    if shard is None:
        write_images(
            handle, [e.path for e in entries], [e.label for e in entries], [e.cls for e in entries],
            checksums=options.checksums,
        )
        rows = None
    else:  # rows in the fed order; the merge writes them at their positions
        dumps.create_dataset(handle, _shards.POSITIONS, fed.shape, np.int64, data=fed.astype(np.int64))
        rows = np.empty(n, dtype=np.int64)
        rows[fed] = np.arange(len(fed))
    shapes = dumps.token_storage(dataset_shapes(_dims(len(fed), geom, **sizes), products), options.tokens,
                                 options.token_dtype)
    writer = DumpWriter(handle, len(fed), shapes, checksums=options.checksums)
    writes = _row_writes(products, shapes)
    starts = dict.fromkeys(sorted(set(writes.values()) - {"image", "append"}), 0)
    loader = DataLoader(
        ImageDataset(entries, transform, fed, objects),
        batch_size=options.batch_size,
        shuffle=False,
        num_workers=options.num_workers,
        pin_memory=device.type == "cuda",
        collate_fn=collate_objects if objects is not None else None,
    )
    set_fused_attention(model, not options.needs_attention)
    for part in recorder.parts.values():
        part.announce(log)
    batches = iter(loader)  # starts the loader workers
    if _wants_warm_up(device):  # while they read the first images
        _warm_up(model, geom, options, device)
    recorder.attach()
    attention_path = _blockwise.path(model) if options.needs_attention else "fused (no attention product)"
    if options.needs_attention:
        log.info("attention probabilities: %s path", attention_path)
    parity = float("nan")
    errors: dict[str, tuple[float, float]] = {}  # dataset -> the first batch's (absolute, relative) error
    maps_wanted = low and options.needs_attention and "exemplars" in products
    start = time.perf_counter()
    bar = tqdm(total=len(fed), file=progress, unit="img", mininterval=5.0, disable=progress is None)
    # Pipeline: the device computes batch k + 1 while batch k's products are copied
    # to the host, and one background thread writes them to the file.
    io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitscope-dump")
    writing: Future | None = None
    copied: _HostBatch | None = None

    waits = {"loader": 0.0, "device": 0.0, "writer": 0.0}  # seconds the main loop waited on each
    done: list[float] = []  # seconds from the start until each batch's products were on the host

    def flush(batch: _HostBatch) -> Future:
        before = time.perf_counter()
        arrays = batch.numpy()
        if batch.finite is not None and not bool(batch.finite.all()):
            raise _non_finite_tokens(
                model, recorder, batch.images, batch.positions, batch.finite, entries, meta, options.precision
            )
        batch.images = None
        copied_at = time.perf_counter()
        done.append(copied_at - start)
        if writing is not None:
            writing.result()
        waits["device"] += copied_at - before
        waits["writer"] += time.perf_counter() - copied_at
        where = batch.positions if rows is None else rows[batch.positions]
        return io.submit(_write_batch, handle, writer, where, arrays, batch.starts, writes)

    try:
        with torch.inference_mode():
            ready = time.perf_counter()
            for step, (images, positions, *batch_objects) in enumerate(batches):
                waits["loader"] += time.perf_counter() - ready
                images = images.to(device, non_blocking=True)
                found = batch_objects[0] if batch_objects else None
                fp32 = (
                    _fp32_batch(model, recorder, images, positions.numpy(), found, maps_wanted)
                    if low and step == 0 else None
                )
                if fp32 is not None:
                    reference = fp32.fused
                elif options.needs_attention and step == 0:
                    reference = _fused_forward(model, recorder, images)
                else:
                    reference = None
                recorder.start_batch(positions.numpy(), found)
                maps = _precision.first_image_maps(model) if fp32 is not None and maps_wanted else None
                with _precision.numerics(options.precision, device), maps or contextlib.nullcontext({}) as kept:
                    tokens = model.forward_features(images)
                # (B,) per image: no NaN (amax propagates it) and no Inf; read on the host in flush
                finite = _finite(tokens)
                if reference is not None:  # parity of the explicit path (in fp32), on the first batch
                    explicit = fp32.tokens if fp32 is not None else tokens
                    parity = float((reference - explicit).abs().max())
                    if not math.isfinite(parity) or parity > options.parity_tolerance:
                        ok = finite if fp32 is None else _finite(explicit)
                        if not bool(ok.all()):
                            raise _non_finite_tokens(model, recorder, images, positions.numpy(), ok, entries, meta)
                        raise ModelError(
                            f"model {meta.get('model', '?')!r}, dataset {meta.get('dataset', '?')!r}: explicit "
                            f"attention differs from the fused forward by {parity:.3g} "
                            + ("(the fused forward's tokens are not finite) " if not math.isfinite(parity) else "")
                            + f"> extract.parity_tolerance = {options.parity_tolerance}"
                        )
                    del reference, explicit
                if fp32 is not None:  # the first batch in the precision against the same batch in fp32
                    errors = _precision.errors({**recorder.compared(), **kept}, fp32.products)
                    _log_errors(options.precision, device, len(positions), errors)
                    del fp32, kept
                _check_hooks(recorder, meta, options)
                batch = _HostBatch(
                    recorder.take(), positions.numpy(), dict(starts),
                    finite=finite.to("cpu", non_blocking=True), images=images,
                )
                if device.type == "cuda":
                    batch.event = torch.cuda.Event()
                    batch.event.record()
                for kind in starts:  # the batch's rows of each kind (its CKA minibatches)
                    starts[kind] += next((v.shape[0] for k, v in batch.arrays.items() if writes.get(k) == kind), 0)
                if copied is not None:
                    writing = flush(copied)
                    bar.update(len(copied.positions))
                copied = batch
                if device.type == "cpu" or step % 16 == 15:  # cheap next to a CPU batch
                    _release_freed_memory()
                ready = time.perf_counter()
            if copied is not None:
                writing = flush(copied)
                bar.update(len(copied.positions))
            if writing is not None:
                writing.result()
    finally:
        io.shutdown(wait=True)
        bar.close()
        recorder.detach()
        set_fused_attention(model, True)
    elapsed = time.perf_counter() - start

    for part in _products.parts(products, order=dumps.PRODUCTS):  # in the order of the file
        recorder.part(part).finish(writer)

    summary = {
        "images": len(fed),
        "seconds": elapsed,
        "images_per_second": len(fed) / elapsed if elapsed > 0 else float("nan"),
        "parity_max_abs_diff": parity,
        "precision_errors": errors,
        "waits": waits,
        "batch_done_seconds": done,
    }
    writer.attrs(
        {
            **meta,
            "format_version": FORMAT_VERSION,
            "products": sorted(products),
            "grid": list(geom.grid),
            "patch": list(geom.patch),
            "num_prefix_tokens": geom.prefix,
            "num_blocks": geom.blocks,
            "num_heads": geom.heads,
            "width": geom.width,
            "cls_source": "token 0" if geom.prefix > 0 else "mean of spatial tokens (model has no CLS token)",
            "explicit_attention": options.needs_attention,
            "attention_path": attention_path,
            "parity_max_abs_diff": parity,
            "precision": options.precision,
            "precision_matmul": _precision.matmul_precision(options.precision, device),
            **_error_attrs(errors, low, min(len(fed), options.batch_size)),
            "batch_size": options.batch_size,
            "vitscope_version": __version__,
            "timm_version": timm.__version__,
            "torch_version": torch.__version__,
            **(dict(zip(_shards.SHARD_ATTRS, (*shard, begin, end), strict=True)) if shard else {}),
        }
    )
    log.info(
        "extracted %d images in %.1f s (%.2f images/s; first batch on the host after %.2f s); "
        "parity max |explicit - fused| = %.3g; "
        "waited %.1f s for images, %.1f s for device copies, %.1f s for dump writes",
        len(fed), elapsed, summary["images_per_second"], done[0] if done else float("nan"), parity,
        waits["loader"], waits["device"], waits["writer"],
    )
    return summary


M_ARENA_MAX = -8  # glibc mallopt parameter


def _limit_heap_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread heap arenas: with one arena per intra-op thread, freed
    batch tensors fragment across arenas and the resident size drifts upward with
    the number of batches. Process-wide, so only called by :func:`run`."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, arenas)


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc only) so the resident size
    stays flat over many batches instead of creeping up with fragmentation."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  (musl has none)
    except (OSError, AttributeError):
        return None
    return libc


def _wants_warm_up(device: torch.device) -> bool:
    """A warm-up batch pays on CUDA (kernels load lazily); on the CPU it is pure cost."""
    return device.type == "cuda"


def _warm_up(model: nn.Module, geom: Geometry, options: ExtractOptions, device: torch.device) -> None:
    """Run one seeded random batch through every path of the first real batch (fused
    forward, explicit forward with the hooks, reductions, asynchronous host copies)
    and discard it.

    Called while the DataLoader workers read the first images, so the one-off costs
    (lazy loading of the CUDA kernels, Triton's JIT or cache load, the first pinned
    host buffers) are paid while the device would otherwise wait. A recorder of its
    own: nothing of the warm-up reaches the dump or the real recorder's sums.
    """
    (gh, gw), (ph, pw) = geom.grid, geom.patch
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.randn(options.batch_size, 3, gh * ph, gw * pw, generator=generator, device=device)
    setting = Setting(geom, options, frozenset(options.products), device, 0, np.zeros(0, np.int64))
    scratch = Recorder(model, setting, _products.parts(options.products))
    scratch.attach()
    try:
        with torch.inference_mode(), _precision.numerics(options.precision, device):
            if options.needs_attention:
                _fused_forward(model, scratch, images)
            model.forward_features(images)
            products = scratch.take()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            del products  # the pinned host buffers go back to torch's cache for the real batches
    finally:
        scratch.detach()


def _fused_forward(model: nn.Module, recorder: Recorder, images: torch.Tensor) -> torch.Tensor:
    """Output tokens of the fused forward, hooks off: the reference the first batch's
    explicit forward is compared with (``parity_max_abs_diff``)."""
    recorder.active = False
    try:
        set_fused_attention(model, True)
        return model.forward_features(images)
    finally:
        recorder.active = True
        set_fused_attention(model, False)


def _finite(tokens: torch.Tensor) -> torch.Tensor:
    """(B,) bool: every output token of the image is finite (amax propagates a NaN)."""
    return tokens.abs().flatten(1).amax(dim=1) < math.inf


@dataclass
class _Fp32Batch:
    """The first batch recorded in fp32, for the precision check (:func:`_fp32_batch`)."""

    fused: torch.Tensor | None  # output tokens of the fused forward: the parity reference (explicit attention)
    tokens: torch.Tensor  # output tokens of the fp32 forward with the hooks
    products: dict[str, torch.Tensor]  # what that forward recorded (Recorder.compared), on the device


def _fp32_batch(
    model: nn.Module,
    recorder: Recorder,
    images: torch.Tensor,
    positions: np.ndarray,
    objects: Any,
    maps: bool,
) -> _Fp32Batch:
    """Record the first batch in fp32 through a recorder of its own (the real one is off):
    the reference of the precision's errors (:func:`vitscope.extract.precision.errors`); with
    explicit attention also the fused forward, the reference of the parity check (in fp32).
    ``maps``: keep the first image's attention maps (``exemplars/attention``)."""
    fused = _fused_forward(model, recorder, images) if recorder.attention else None
    scratch = Recorder(model, recorder.setting, list(recorder.parts))
    scratch.start_batch(positions, objects)
    recorder.active = False
    scratch.attach()
    try:
        with _precision.first_image_maps(model) if maps else contextlib.nullcontext({}) as kept:
            tokens = model.forward_features(images)
        products = {**scratch.compared(), **kept}
    finally:
        scratch.detach()
        recorder.active = True
    return _Fp32Batch(fused, tokens, products)


def _error_attrs(errors: dict[str, tuple[float, float]], low: bool, images: int) -> dict[str, Any]:
    """The dump's :data:`vitscope.io.dumps.PRECISION_ERRORS` (none in fp32) and the image count compared."""
    if not low:
        return {}
    names = sorted(errors)
    datasets, absolute, relative = PRECISION_ERRORS
    return {
        datasets: names,
        absolute: np.array([errors[k][0] for k in names], dtype=np.float64),
        relative: np.array([errors[k][1] for k in names], dtype=np.float64),
        "precision_error_images": images,
    }


def _log_errors(precision: str, device: torch.device, images: int, errors: dict[str, tuple[float, float]]) -> None:
    worst = max(errors, key=lambda k: errors[k][1], default=None)
    log.info(
        "precision %s (matrix products in %s): first batch (%d images) against fp32: largest relative error %.3g (%s)",
        precision, _precision.matmul_precision(precision, device), images,
        errors[worst][1] if worst else float("nan"), worst,
    )
    for name, (absolute, relative) in errors.items():
        log.info("  %-40s max abs error %.3g, relative to max |fp32| %.3g", name, absolute, relative)


def _non_finite_tokens(
    model: nn.Module,
    recorder: Recorder,
    images: torch.Tensor | None,
    positions: np.ndarray,
    finite: torch.Tensor,
    entries: Sequence[Entry],
    meta: dict[str, Any],
    precision: str = "fp32",
) -> ModelError:
    """The error for a batch whose output tokens are not all finite although the weights
    are (:func:`vitscope.models.registry.check_finite` ran at load): an overflow of the activations.

    ``images``: (B, 3, H, W) the batch's input; ``finite``: (B,) bool per image. The first
    bad image is run again alone (hooks of ``recorder`` off) to name the first block whose
    output holds a NaN or an infinity. Extraction stops: NaN tokens would make every
    product of the image, and every sum over the dataset, NaN.
    """
    bad = [r for r, ok in enumerate(finite.cpu().tolist()) if not ok]
    row = bad[0]
    position = int(positions[row])
    where = "unknown"
    if images is not None:
        found: list[int] = []

        def hook(index: int):
            def check(module: nn.Module, args: Any, output: torch.Tensor) -> None:
                if not found and not bool(torch.isfinite(output).all()):
                    found.append(index)

            return check

        handles = [block.register_forward_hook(hook(i)) for i, block in enumerate(model.blocks)]
        recorder.active = False
        try:
            image = images[row : row + 1]
            if not bool(torch.isfinite(image).all()):
                where = "the preprocessed image itself"
            else:
                with _precision.numerics(precision, image.device):
                    model.forward_features(image)
                where = (
                    f"block {found[0] + 1} of {len(model.blocks)} (first non-finite block output)"
                    if found
                    else "the final norm (every block output is finite)"
                )
        finally:
            recorder.active = True
            for handle in handles:
                handle.remove()
    return ModelError(
        f"model {meta.get('model', '?')!r}, dataset {meta.get('dataset', '?')!r}: image '{entries[position].path}' "
        f"(position {position}; {len(bad)} of {len(finite)} images of its batch) gives non-finite tokens, first at "
        f"{where}, although the weights are finite: the activations overflow "
        + ("float32; " if precision in ("fp32", "tf32") else f"{precision} (extract.precision = {precision}); ")
        + "extraction stopped, no dump is kept"
    )


def _check_hooks(recorder: Recorder, meta: dict[str, Any], options: ExtractOptions) -> None:
    if options.needs_attention and any(c == 0 for c in recorder.attn_calls):
        missing = [i + 1 for i, c in enumerate(recorder.attn_calls) if c == 0]
        raise ModelError(
            f"model {meta.get('model', '?')!r}: blocks {missing} never exposed attention probabilities "
            "(their attention module has no explicit path through attn_drop)"
        )


def extract_dump(
    model: str,
    dataset: str,
    model_entry: dict[str, Any],
    index: str,
    output: str,
    options: ExtractOptions,
    device: str = "auto",
    threads: int = 1,
    progress: TextIO | None = None,
    coco: dict[str, str] | None = None,
    shard: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Build ``model``, read the index, and write the dump to ``output`` atomically.

    ``coco``: the dataset's ``root`` and ``annotations`` (kind coco), read for the
    product ``objects``. ``shard``: (k, K), write shard k of K (:func:`run`).
    """
    from ..io.datasets import load_coco, read_index
    from ..io.dumps import atomic_path, create_file
    from ..io.preprocess import preprocess
    from ..models.registry import build, spec_from_config

    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    spec = spec_from_config(model, model_entry)
    net, report = build(spec)
    log.info("model %s: %s", model, report.summary())
    entries = read_index(index)
    target = resolve_device(device)
    meta = {
        "model": model,
        "dataset": dataset,
        **{k: v for k, v in spec.describe().items() if k not in ("alias",)},
        "weights_file": report.file,
        "weights_sha256": report.sha256,
        "load_report": report.summary(),
        "device": str(target),
    }
    transform = preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    objects = None
    if "objects" in options.products and coco:
        from ..features.objects import ObjectMasks

        key = f"datasets.{dataset}"
        objects = ObjectMasks(
            load_coco(coco["annotations"], key=key), [e.path for e in entries], coco["root"],
            spec.image_size, geometry(net).grid, coco["annotations"],
        )
    with atomic_path(output) as tmp, create_file(tmp) as handle:
        return run(net, entries, transform, handle, options, target, meta, progress, objects, shard)
