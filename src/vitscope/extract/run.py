"""One forward pass per image, every block recorded (the dump products).

The model runs with explicit attention (timm's fused path never materialises
the probabilities) and forward hooks on every block read, per batch:

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
"""


from __future__ import annotations

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
from ..attention import metrics
from ..errors import ConfigError, ModelError
from ..io.datasets import Entry
from ..io.dumps import (
    ATTENTION_PRODUCTS,
    DEFAULT_PRODUCTS,
    FORMAT_VERSION,
    PRODUCTS,
    REPRESENTATIONS,
    DumpWriter,
    write_images,
)
from ..io.preprocess import ImageDataset, collate_objects
from ..models.devices import resolve_device
from ..models.registry import Geometry, geometry, set_fused_attention
from . import fused
from .hooks import Recorder

if TYPE_CHECKING:
    from ..features.objects import ImageObjects, ObjectMasks

log = logging.getLogger(__name__)


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
    #: False only in ``benchmarks/extract.py``, to time the dump layout without checksums
    #: (:func:`vitscope.io.dumps.create_dataset`); not a config key
    checksums: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.products) - set(PRODUCTS))
        if unknown:
            raise ConfigError(f"extract.products: unknown {unknown}; choose from {list(PRODUCTS)}")
        if self.batch_size < 1:
            raise ConfigError(f"extract.batch_size = {self.batch_size} must be >= 1")
        if "gram" in self.products:
            if self.cka_batch_size < 4:
                raise ConfigError(f"extract.cka_batch_size = {self.cka_batch_size} must be >= 4 (HSIC1 needs n > 3)")
            if self.batch_size % self.cka_batch_size:
                raise ConfigError(
                    f"extract.batch_size = {self.batch_size} must be a multiple of "
                    f"extract.cka_batch_size = {self.cka_batch_size}"
                )

    @property
    def needs_attention(self) -> bool:
        return bool(ATTENTION_PRODUCTS & set(self.products))


def image_order(n: int, options: ExtractOptions) -> np.ndarray:
    """Order in which images are fed: a seeded permutation when Gram matrices are
    recorded (CKA minibatches must mix classes, and be the same for every model),
    else index order."""
    if "gram" in options.products:
        return np.random.default_rng(options.order_seed).permutation(n)
    return np.arange(n)


def cka_partition(order: np.ndarray, batch: int) -> np.ndarray:
    """(M, b) dataset positions of the CKA minibatches: consecutive runs of ``order``.

    The last ``n mod b`` images of the order form no minibatch.
    """
    m = len(order) // batch
    return order[: m * batch].reshape(m, batch)


def exemplar_positions(n: int, count: int) -> np.ndarray:
    """``count`` positions spread evenly over the index (first and last included)."""
    if count <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(np.int64))


@dataclass
class _HostBatch:
    """A batch's products copied (or being copied) to the host."""

    arrays: dict[str, torch.Tensor]
    positions: np.ndarray
    chunk_start: int
    event: Any = None  # torch.cuda.Event marking the end of the copies
    finite: torch.Tensor | None = None  # (B,) bool: every output token of the image is finite (on the host)
    images: torch.Tensor | None = None  # (B, 3, H, W) the batch's input, kept to locate non-finite tokens

    def numpy(self) -> dict[str, np.ndarray]:
        if self.event is not None:
            self.event.synchronize()
        return {name: value.numpy() for name, value in self.arrays.items()}


def _write_batch(
    handle: h5py.File, writer: DumpWriter, positions: np.ndarray, arrays: dict[str, np.ndarray], chunk_start: int
) -> None:
    """Write one batch: per-image products at their dataset positions, Gram
    matrices at the next minibatch slots, object rows after the previous batch's."""
    writer.write(positions, {k: v for k, v in arrays.items() if not k.startswith(("cka/", "objects/"))})
    for name, values in arrays.items():
        if name.startswith("cka/"):
            writer.write_rows(name, chunk_start, values)
        elif name.startswith("objects/"):
            writer.append(name, values)


def _shapes(n: int, geom: Geometry, products: frozenset[str], m: int, b: int, e: int) -> dict[str, Any]:
    L, H, T, D = geom.blocks, geom.heads, geom.tokens, geom.width  # noqa: N806
    shapes: dict[str, Any] = {}
    if "tokens" in products:
        shapes["tokens/cls"] = ((n, L, D), np.float32)
        shapes["tokens/spatial_mean"] = ((n, L, D), np.float32)
        if geom.prefix > 1:
            shapes["tokens/registers"] = ((n, L, geom.prefix - 1, D), np.float32)
    if "cls_attention" in products:
        shapes["attention/cls"] = ((n, L, H, T), np.float32)
    if "distance" in products:
        shapes["attention/distance"] = ((n, L, H), np.float64)
    if "exemplars" in products:
        shapes["exemplars/attention"] = ((e, L, H, T, T), np.float32)
    if "gram" in products:
        for group, points in (("blocks", L), ("norms", 2 * L)):
            for rep in REPRESENTATIONS:
                shapes[f"cka/{group}/{rep}"] = ((m, points, b, b), np.float64)
    if "objects" in products:
        shapes["objects/features"] = ((None, L, D), np.float32)  # grows batch by batch
    return shapes


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
) -> dict[str, Any]:
    """Extract every product of ``options`` for the images of ``entries`` into ``handle``.

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
    if geom.prefix == 0 and products & {"cls_attention", "attention_sums"}:
        raise ModelError(
            f"model {meta.get('model', '?')!r} has no CLS token (num_prefix_tokens = 0): "
            "products cls_attention and attention_sums need one; remove them from extract.products"
        )
    if "objects" in products:
        if objects is None:
            raise ConfigError(
                f"dataset {meta.get('dataset', '?')!r}: product 'objects' needs instance annotations "
                "(a dataset of kind coco)"
            )
        if tuple(objects.grid) != geom.grid:
            raise ConfigError(f"object masks are for grid {tuple(objects.grid)}, the model's grid is {geom.grid}")
    else:
        objects = None
    model = model.to(device).eval()
    _limit_heap_arenas()
    order = image_order(n, options)
    partition = cka_partition(order, options.cka_batch_size) if "gram" in products else np.zeros((0, 0), np.int64)
    exemplars = exemplar_positions(n, options.exemplars) if "exemplars" in products else np.zeros(0, np.int64)

    write_images(
        handle, [e.path for e in entries], [e.label for e in entries], [e.cls for e in entries],
        checksums=options.checksums,
    )
    writer = DumpWriter(
        handle, n, _shapes(n, geom, products, len(partition), options.cka_batch_size, len(exemplars)),
        checksums=options.checksums,
    )
    loader = DataLoader(
        ImageDataset(entries, transform, order, objects),
        batch_size=options.batch_size,
        shuffle=False,
        num_workers=options.num_workers,
        pin_memory=device.type == "cuda",
        collate_fn=collate_objects if objects is not None else None,
    )
    found: list[ImageObjects] = []  # the objects of every image, in the order fed
    recorder = Recorder(model, geom, options.products, exemplars, options.cka_batch_size, device)
    set_fused_attention(model, not options.needs_attention)
    if products & {"distance", "attention_sums"}:
        log.info(
            "attention reductions: %s",
            "fused Triton kernel" if fused.available(device) else "torch (no Triton kernel on this device)",
        )
    batches = iter(loader)  # starts the loader workers
    if _wants_warm_up(device):  # while they read the first images
        _warm_up(model, geom, options, device)
    recorder.attach()
    parity = float("nan")
    chunk_start = 0
    start = time.perf_counter()
    bar = tqdm(total=n, file=progress, unit="img", mininterval=5.0, disable=progress is None)
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
            raise _non_finite_tokens(model, recorder, batch.images, batch.positions, batch.finite, entries, meta)
        batch.images = None
        copied_at = time.perf_counter()
        done.append(copied_at - start)
        if writing is not None:
            writing.result()
        waits["device"] += copied_at - before
        waits["writer"] += time.perf_counter() - copied_at
        return io.submit(_write_batch, handle, writer, batch.positions, arrays, batch.chunk_start)

    try:
        with torch.inference_mode():
            ready = time.perf_counter()
            for step, (images, positions, *batch_objects) in enumerate(batches):
                waits["loader"] += time.perf_counter() - ready
                images = images.to(device, non_blocking=True)
                reference = _fused_forward(model, recorder, images) if options.needs_attention and step == 0 else None
                recorder.start_batch(positions.numpy(), batch_objects[0] if batch_objects else None)
                found += [o.index_only() for o in batch_objects[0]] if batch_objects else []
                tokens = model.forward_features(images)
                # (B,) per image: no NaN (amax propagates it) and no Inf; read on the host in flush
                finite = tokens.abs().flatten(1).amax(dim=1) < math.inf
                if reference is not None:  # parity of the explicit path, on the first batch
                    parity = float((reference - tokens).abs().max())
                    if not math.isfinite(parity) or parity > options.parity_tolerance:
                        if not bool(finite.all()):
                            raise _non_finite_tokens(model, recorder, images, positions.numpy(), finite, entries, meta)
                        raise ModelError(
                            f"model {meta.get('model', '?')!r}, dataset {meta.get('dataset', '?')!r}: explicit "
                            f"attention differs from the fused forward by {parity:.3g} "
                            + ("(the fused forward's tokens are not finite) " if not math.isfinite(parity) else "")
                            + f"> extract.parity_tolerance = {options.parity_tolerance}"
                        )
                    del reference
                _check_hooks(recorder, meta, options)
                batch = _HostBatch(
                    recorder.take(), positions.numpy(), chunk_start,
                    finite=finite.to("cpu", non_blocking=True), images=images,
                )
                if device.type == "cuda":
                    batch.event = torch.cuda.Event()
                    batch.event.record()
                chunk_start += next((v.shape[0] for k, v in batch.arrays.items() if k.startswith("cka/")), 0)
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

    if "attention_sums" in products:
        writer.put("attention/cls_sum", recorder.cls_sum.cpu().numpy())
        writer.put("attention/aligned_sum", metrics.align(recorder.spatial_sum, geom.grid).cpu().numpy())
        writer.put("attention/spatial_query_sum", recorder.spatial_sum.sum(dim=-2).cpu().numpy())
        writer.put("attention/sink_sum", recorder.sink_sum.cpu().numpy())
        writer.attrs({"count": n, "queries": geom.grid[0] * geom.grid[1]}, group="attention")
    if recorder.zero_rows.numel():
        writer.put("attention/zero_mass_rows", recorder.zero_rows.cpu().numpy())
    if "exemplars" in products:
        writer.put("exemplars/position", exemplars)
        for e, pos in enumerate(exemplars.tolist()):
            handle["exemplars/attention"][e] = torch.stack(recorder.exemplar_maps[pos]).cpu().numpy()
    if "gram" in products:
        writer.put("cka/index", partition)
        writer.attrs({"batch_size": options.cka_batch_size, "order_seed": options.order_seed}, group="cka")
    if objects is not None:
        _write_objects(writer, found, order, objects.category_names())

    summary = {
        "images": n,
        "seconds": elapsed,
        "images_per_second": n / elapsed if elapsed > 0 else float("nan"),
        "parity_max_abs_diff": parity,
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
            "parity_max_abs_diff": parity,
            "batch_size": options.batch_size,
            "vitscope_version": __version__,
            "timm_version": timm.__version__,
            "torch_version": torch.__version__,
        }
    )
    log.info(
        "extracted %d images in %.1f s (%.2f images/s; first batch on the host after %.2f s); "
        "parity max |explicit - fused| = %.3g; "
        "waited %.1f s for images, %.1f s for device copies, %.1f s for dump writes",
        n, elapsed, summary["images_per_second"], done[0] if done else float("nan"), parity,
        waits["loader"], waits["device"], waits["writer"],
    )
    return summary


def _write_objects(
    writer: DumpWriter, found: Sequence[ImageObjects], order: np.ndarray, names: dict[int, str]
) -> None:
    """The per-object index of ``objects/features`` (rows in the order the images were fed)."""
    image = np.concatenate([np.full(o.count, pos, np.int64) for o, pos in zip(found, order, strict=True)])
    category = np.concatenate([o.category for o in found]).astype(np.int64)
    writer.put("objects/image", image)
    writer.put("objects/category", category)
    writer.put("objects/annotation", np.concatenate([o.annotation for o in found]).astype(np.int64))
    writer.put("objects/category_name", np.array([names.get(int(c), str(c)) for c in category], dtype=object))
    empty, crowd = sum(o.empty for o in found), sum(o.crowd for o in found)
    writer.attrs(
        {
            "objects": len(image),
            "annotations": len(image) + empty + crowd,
            "skipped_empty": empty,
            "skipped_crowd": crowd,
            "categories": len(np.unique(category)),
            "weighting": "instance mask mapped like the image, area-averaged per token, normalised to sum 1",
        },
        group="objects",
    )


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
    scratch = Recorder(model, geom, options.products, np.zeros(0, np.int64), options.cka_batch_size, device)
    scratch.attach()
    try:
        with torch.inference_mode():
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


def _non_finite_tokens(
    model: nn.Module,
    recorder: Recorder,
    images: torch.Tensor | None,
    positions: np.ndarray,
    finite: torch.Tensor,
    entries: Sequence[Entry],
    meta: dict[str, Any],
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
        f"{where}, although the weights are finite: the activations overflow float32; "
        "extraction stopped, no dump is kept"
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
) -> dict[str, Any]:
    """Build ``model``, read the index, and write the dump to ``output`` atomically.

    ``coco``: the dataset's ``root`` and ``annotations`` (kind coco), read for the
    product ``objects``.
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
        return run(net, entries, transform, handle, options, target, meta, progress, objects)
