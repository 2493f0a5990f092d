"""Benchmark: full extraction against a bare fused forward, and memory against N.

Prints, for one model and batch size:
- images/s of the full extraction (every product, HDF5 writes included) and of
  a bare fused ``forward_features`` over the same DataLoader at 8N images, and
  their ratio; also the model alone on one preloaded batch, for context. On CUDA
  both run one warm-up batch while the loader workers start (extract.run does;
  the bare loop does the same, so the ratio compares like with like), and the
  ratio of their steady rates (last 3/4 of the batches) is printed too;
- peak resident memory (and peak CUDA memory) of the extraction at N and 8N images;
- with ``--precisions P,Q,..`` (instead of all the above): at each precision (``extract.precision``), the
  bare fused forward and the full extraction at 8N, ``--rounds`` interleaved rounds, the ratios
  full / bare (same precision) and each against fp32, with the errors the dumps recorded
  (docs/dumps.md#precision);
- with ``--checksums R`` (instead of all the above): the full extraction at 8N with and without the dump's
  checksums (fletcher32 chunks and the metadata digest, against the layout before
  them: contiguous datasets, no checksum), R runs of each, alternated, and the
  ratio of the medians.

Each measurement runs in a fresh subprocess so peaks do not mix. Synthetic
images are generated in a temporary folder (at most 1024 distinct ones, cycled).
The DataLoader keeps workers x 2 batches in flight, so N should be well above
workers x 2 x batch for the memory comparison to measure steady state.
Not a test: run it by hand,
`python benchmarks/extract.py [--arch vit_small_patch16_224 --device cpu]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(args: argparse.Namespace) -> None:
    import h5py
    import torch
    from torch.utils.data import DataLoader

    from vitscope.extract import precision
    from vitscope.extract import run as extract
    from vitscope.io import datasets as data
    from vitscope.io import dumps
    from vitscope.io import preprocess as loading
    from vitscope.models import registry as models

    torch.set_num_threads(args.threads)
    waits: dict = {}
    spec = models.spec_from_config("bench", {"arch": args.arch, "image_size": args.image_size})
    model, _ = models.build(spec)
    device = torch.device(args.device)
    distinct = data.index_imagefolder(Path(args.root) / "images")
    entries = [distinct[i % len(distinct)] for i in range(args.n)]
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std)
    products = tuple(args.products.split(",")) if args.products else extract.DEFAULT_PRODUCTS
    options = extract.ExtractOptions(
        products=products, batch_size=args.batch_size, cka_batch_size=args.batch_size,
        num_workers=args.workers, exemplars=4, precision=args.precision, attention=args.attention,
    )
    numerics = precision.numerics(args.precision, device)  # the bare and model-alone forwards' precision
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if args.no_warm_up:
        extract._wants_warm_up = lambda device: False
    done: list[float] = []
    dump_bytes, cpu_seconds = 0, 0.0
    errors: dict = {}
    if args.mode == "model":
        model = model.to(device).eval()
        models.set_fused_attention(model, True)
        batch = torch.stack([transform(data.load_image(e.path)) for e in entries[: args.batch_size]]).to(device)
        with torch.inference_mode(), numerics:
            for _ in range(3):
                model.forward_features(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.n // args.batch_size):
                model.forward_features(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        entries = entries[: (args.n // args.batch_size) * args.batch_size]
    elif args.mode == "bare":
        cpu = _cpu_seconds()
        model = model.to(device).eval()
        models.set_fused_attention(model, True)
        loader = DataLoader(
            loading.ImageDataset(entries, transform, extract.image_order(len(entries), options)),
            batch_size=args.batch_size, num_workers=args.workers, pin_memory=device.type == "cuda",
        )
        cuda = device.type == "cuda"
        events = []  # one per batch, timed on the device: when each batch's forward ended
        start = time.perf_counter()
        with torch.inference_mode(), numerics:
            batches = iter(loader)  # as in extract.run: a warm-up batch while the workers start
            if cuda and not args.no_warm_up:
                model.forward_features(torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device))
                torch.cuda.synchronize()
            if cuda:
                first = torch.cuda.Event(enable_timing=True)
                first.record()
            for images, _ in batches:
                model.forward_features(images.to(device, non_blocking=True))
                if cuda:
                    events.append(torch.cuda.Event(enable_timing=True))
                    events[-1].record()
                else:
                    done.append(time.perf_counter() - start)
            if cuda:
                torch.cuda.synchronize()
                offset = time.perf_counter() - start - first.elapsed_time(events[-1]) / 1000
                done = [offset + first.elapsed_time(e) / 1000 for e in events]
        seconds = time.perf_counter() - start
        cpu_seconds = _cpu_seconds() - cpu
    else:
        options = dataclasses.replace(options, checksums=args.checksums == "on")
        create = dumps.create_file if args.checksums == "on" else (lambda path: h5py.File(path, "w"))
        with tempfile.TemporaryDirectory() as tmp:
            cpu = _cpu_seconds()
            with create(Path(tmp) / "d.h5") as handle:
                summary = extract.run(model, entries, transform, handle, options, device, {"model": "bench"})
            cpu_seconds = _cpu_seconds() - cpu
            dump_bytes = (Path(tmp) / "d.h5").stat().st_size
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = summary["seconds"]
            waits = summary["waits"]
            done = summary["batch_done_seconds"]
            errors = summary["precision_errors"]
    result = {
        "seconds": seconds,
        "images_per_second": len(entries) / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0,
        "waits": waits if args.mode == "full" else {},
        "batch_done_seconds": done,
        "dump_mib": dump_bytes / 2**20 if args.mode == "full" else 0.0,
        "cpu_seconds": cpu_seconds,
        "precision_errors": errors,
    }
    print(json.dumps(result))


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the loader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(
    args: argparse.Namespace, root: str, mode: str, n: int, products: str = "", env: dict | None = None,
    warm_up: bool = True, checksums: str = "on", precision: str = "fp32", attention: str = "blockwise",
) -> dict:
    cmd = [
        sys.executable, __file__, "--child", "--mode", mode, "--n", str(n), "--root", root,
        "--arch", args.arch, "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
        "--device", args.device, "--workers", str(args.workers), "--threads", str(args.threads),
        "--products", products, "--checksums", checksums, "--precision", precision, "--attention", attention,
        *(() if warm_up else ("--no-warm-up",)),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})}).stdout
    return json.loads(out.strip().splitlines()[-1])


def steady_rate(times: list[float], batch_size: int) -> float | None:
    """Images/s over the last 3/4 of the batches (start-up excluded); None for short runs."""
    if len(times) < 8:
        return None
    k = len(times) // 4
    return (len(times) - 1 - k) * batch_size / (times[-1] - times[k])


def checksum_cost(args: argparse.Namespace, root: str, n: int) -> None:
    """The full extraction of ``n`` images with and without the dump's checksums, side by side."""
    checks: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(int(args.checksums)):  # alternated, so drifts of a shared machine hit both alike
        for state in checks:
            checks[state].append(measure(args, root, "full", n, checksums=state))
    print(f"machine: {platform.processor() or platform.machine()}, device {args.device}, {args.threads} threads")
    print(f"model: {args.arch} at {args.image_size}px, batch {args.batch_size}, {args.workers} loader workers")
    median = {k: statistics.median(r["seconds"] for r in v) for k, v in checks.items()}
    cpu = {k: statistics.median(r["cpu_seconds"] for r in v) for k, v in checks.items()}
    for state, runs in checks.items():
        times = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        writes = statistics.median(r["waits"]["writer"] for r in runs)
        print(f"full extraction N={n}, checksums {state:3s}: {times} s (median {median[state]:.2f} s, "
              f"CPU {cpu[state]:.2f} s), dump {runs[0]['dump_mib']:.1f} MiB, waited {writes:.2f} s for writes")
    print(f"checksum cost: median time on / off = {median['on'] / median['off']:.4f}, "
          f"median CPU time on / off = {cpu['on'] / cpu['off']:.4f}; fastest run on / off = "
          f"{min(r['seconds'] for r in checks['on']) / min(r['seconds'] for r in checks['off']):.4f} (target <= 1.03)")
    replay = {state: [] for state in checks}
    for _ in range(5):
        for state in replay:
            replay[state].append(write_replay(args, n, state == "on"))
    cost = statistics.median(replay["on"]) - statistics.median(replay["off"])
    fastest = min(r["seconds"] for v in checks.values() for r in v)
    print(f"write replay (the extraction's dump writes alone, random values, same shapes and order), CPU s: "
          f"off {statistics.median(replay['off']):.3f}, on {statistics.median(replay['on']):.3f}; "
          f"difference {cost:.3f} s = {cost / fastest:.2%} of the fastest extraction ({fastest:.2f} s)")


#: with --ablation, the subsets of the products timed at each precision of --precisions
ABLATION = {
    "tokens only": "tokens",
    "tokens + attention products": "tokens,cls_attention,distance,attention_sums,exemplars",
    "tokens + gram": "tokens,gram",
}


def precision_cost(args: argparse.Namespace, root: str, n: int) -> None:
    """The bare fused forward and the full extraction of ``n`` images at each precision of
    ``--precisions``, ``--rounds`` rounds with everything interleaved, side by side; with
    ``--explicit`` also the full extraction on the explicit attention path, with
    ``--ablation`` also the subsets of :data:`ABLATION` (what bounds full / bare)."""
    precisions = args.precisions.split(",")
    kinds = {"bare": ("bare", "", "blockwise"), "full": ("full", "", "blockwise")}
    if args.explicit:
        kinds["full, explicit attention"] = ("full", "", "explicit")
    if args.ablation:
        kinds.update({name: ("full", products, "blockwise") for name, products in ABLATION.items()})
    runs: dict[tuple[str, str], list[dict]] = {(p, k): [] for p in precisions for k in kinds}
    load = _load()
    for _ in range(args.rounds):  # interleaved, so drifts of a shared machine hit every precision alike
        for p in precisions:
            for kind, (mode, products, attention) in kinds.items():
                runs[p, kind].append(measure(args, root, mode, n, products, precision=p, attention=attention))
    rate = {k: statistics.median(r["images_per_second"] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r["cpu_seconds"] / n for r in v) for k, v in runs.items()}
    steady = {k: _median_steady(v, args.batch_size) for k, v in runs.items()}
    print(f"machine: {platform.processor() or platform.machine()}, device {args.device}, {args.threads} threads, "
          f"CPU flags: {' '.join(_cpu_flags()) or 'no bf16/fp16 units'}; load average before: {load}, after: {_load()}")
    print(f"model: {args.arch} at {args.image_size}px, batch {args.batch_size}, {args.workers} loader workers, "
          f"N={n}, median of {args.rounds} interleaved round(s)")
    base = "fp32" if "fp32" in precisions else precisions[0]
    print(f"{'precision':10s}{'bare img/s':>12s}{'full img/s':>12s}{'full/bare':>11s}{'(CPU time)':>11s}"
          f"{'(steady)':>10s}{'bare/bare ' + base:>17s}{'full/full ' + base:>17s}"
          "  largest recorded relative error (dataset)")
    for p in precisions:
        errors = runs[p, "full"][0]["precision_errors"]
        worst = max(errors, key=lambda k: errors[k][1], default=None)
        said = f"{errors[worst][1]:.2g} ({worst})" if worst else "- (fp32 is the reference)"
        print(f"{p:10s}{rate[p, 'bare']:12.2f}{rate[p, 'full']:12.2f}{rate[p, 'full'] / rate[p, 'bare']:11.3f}"
              f"{cpu[p, 'bare'] / cpu[p, 'full']:11.3f}{_ratio(steady[p, 'full'], steady[p, 'bare']):>10s}"
              f"{rate[p, 'bare'] / rate[base, 'bare']:17.3f}{rate[p, 'full'] / rate[base, 'full']:17.3f}  {said}")
    if len(kinds) > 2:
        print("against the bare forward of the same precision (images/s, its ratio, the CPU-time ratio, "
              "the ratio of the steady rates):")
        for p in precisions:
            for kind in list(kinds)[2:]:
                print(f"  {p:6s} {kind:32s} {rate[p, kind]:8.2f} img/s  {rate[p, kind] / rate[p, 'bare']:.3f}  "
                      f"{cpu[p, 'bare'] / cpu[p, kind]:.3f}  {_ratio(steady[p, kind], steady[p, 'bare'])}")
    print("(steady: images/s over the last 3/4 of the batches, without the start-up: loading, the first batch's "
          "fp32 reference forward and parity check; '-' below 8 batches)")
    for p in precisions:
        for kind in kinds:
            print(f"  {p} {kind}: " + ", ".join(f"{r['images_per_second']:.2f}" for r in runs[p, kind]) + " images/s")
    for p in precisions:
        errors = runs[p, "full"][0]["precision_errors"]
        if errors:
            print(f"  {p} recorded errors (max abs / relative to max |fp32|): " + "; ".join(
                f"{k} {a:.2g} / {r:.2g}" for k, (a, r) in sorted(errors.items())))


def _median_steady(runs: list[dict], batch_size: int) -> float | None:
    """The median steady rate (:func:`steady_rate`) of ``runs``, None when a run is too short."""
    rates = [steady_rate(r["batch_done_seconds"], batch_size) for r in runs]
    return statistics.median(rates) if rates and all(rates) else None


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3f}" if a and b else "-"


def _load() -> str:
    """The load averages (1, 5, 15 min) of the machine, as text."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def _cpu_flags() -> list[str]:
    """The CPU's bf16 / fp16 units as /proc/cpuinfo names them (Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return sorted(flags & {"avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16", "avx_vnni"})


def write_replay(args: argparse.Namespace, n: int, checksums: bool) -> float:
    """CPU seconds to create and fill, with random values, the datasets an extraction of ``n``
    images writes (default products), batch by batch in the extraction's image order."""
    import h5py
    import numpy as np

    from vitscope.extract import run as extract
    from vitscope.io import dumps
    from vitscope.models import registry as models

    spec = models.spec_from_config("bench", {"arch": args.arch, "image_size": args.image_size})
    model, _ = models.build(spec)
    geom = models.geometry(model)
    options = extract.ExtractOptions(batch_size=args.batch_size, cka_batch_size=args.batch_size, exemplars=4)
    order = extract.image_order(n, options)
    m = n // args.batch_size
    shapes = extract._shapes(n, geom, frozenset(options.products), m, args.batch_size, 4)
    rng = np.random.default_rng(0)
    per_image = {k: v for k, v in shapes.items() if not k.startswith(("cka/", "exemplars/"))}
    batch = {k: rng.standard_normal((args.batch_size, *s[1:])).astype(d) for k, (s, d) in per_image.items()}
    grams = {k: rng.standard_normal((1, *s[1:])).astype(d) for k, (s, d) in shapes.items() if k.startswith("cka/")}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.process_time()
        with (dumps.create_file if checksums else (lambda path: h5py.File(path, "w")))(Path(tmp) / "d.h5") as h:
            dumps.write_images(h, [f"img_{i}.png" for i in range(n)], list(range(n)), ["c"] * n, checksums=checksums)
            writer = dumps.DumpWriter(h, n, shapes, checksums=checksums)
            for k in range(m):
                writer.write(order[k * args.batch_size : (k + 1) * args.batch_size], batch)
                for name, values in grams.items():
                    writer.write_rows(name, k, values)
        seconds = time.process_time() - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="vit_small_patch16_224")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n", type=int, default=128, help="images of the smaller run (the larger has 8x)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--ablation", action="store_true", help="also time extraction at 8N with subsets of the products"
    )
    parser.add_argument(
        "--variants", action="store_true",
        help="also time the full extraction at 8N with the torch attention reductions (VITSCOPE_FUSED=0)",
    )
    parser.add_argument(
        "--checksums", default="", metavar="R",
        help="only time the full extraction at 8N with and without dump checksums, R runs each, alternated",
    )
    parser.add_argument(
        "--precisions", default="", metavar="P,Q",
        help="only time the bare forward and the full extraction at 8N at each precision (fp32,tf32,bf16,fp16)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds of --precisions (median reported)")
    parser.add_argument(
        "--explicit", action="store_true",
        help="with --precisions: also the full extraction on the explicit attention path (extract.attention)",
    )
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--attention", default="blockwise", help=argparse.SUPPRESS)
    parser.add_argument("--products", default="", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-warm-up", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--root", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.checksums = args.checksums or "on"
        child(args)
        return

    from vitscope.io import synthetic

    with tempfile.TemporaryDirectory() as root:
        large = 8 * args.n
        per_class = max(1, min(large, 1024) // 8)
        synthetic.write_imagefolder(root, synthetic.SyntheticSpec(classes=8, per_class=per_class, image_size=256))
        measure(args, root, "bare", args.batch_size)  # warm caches (disk, allocator) once
        if args.checksums:
            checksum_cost(args, root, large)
            return
        if args.precisions:
            precision_cost(args, root, large)
            return
        alone = measure(args, root, "model", large)
        bare = measure(args, root, "bare", large)
        cold = measure(args, root, "bare", large, warm_up=False) if args.variants else None
        full = measure(args, root, "full", args.n)
        full_large = measure(args, root, "full", large)
        ablation = {
            products: measure(args, root, "full", large, products)
            for products in (
                ("tokens", "tokens,cls_attention", "tokens,cls_attention,distance,attention_sums,exemplars")
                if args.ablation else ()
            )
        }
        if args.ablation or args.variants:  # the same full extraction with the previous implementations
            ablation["all, torch reductions (VITSCOPE_FUSED=0)"] = measure(
                args, root, "full", large, "", {"VITSCOPE_FUSED": "0"}
            )
            ablation["all, without the warm-up batch"] = measure(args, root, "full", large, "", warm_up=False)
    print(f"machine: {platform.processor() or platform.machine()}, device {args.device}, {args.threads} threads")
    print(f"model: {args.arch} at {args.image_size}px, batch {args.batch_size}, {args.workers} loader workers")
    print(f"{'':70s}{'images/s':>10s}{'peak RSS MiB':>14s}{'peak CUDA MiB':>15s}")
    rows = (
        ("model alone, one preloaded batch", alone),
        (f"bare fused forward, N={large}", bare),
        *(((f"  bare fused forward without its warm-up batch, N={large}", cold),) if cold else ()),
        (f"full extraction, N={args.n}", full),
        (f"full extraction, N={large}", full_large),
    )
    rows += tuple((f"  products {p}", r) for p, r in ablation.items())
    for name, r in rows:
        print(f"{name:70s}{r['images_per_second']:10.2f}{r['peak_rss_mib']:14.0f}{r['peak_cuda_mib']:15.0f}")
    for name, r in rows[1:]:
        if r["waits"]:
            w = r["waits"]
            print(f"{name.strip():70s} waited {w['loader']:.2f} s for images, {w['device']:.2f} s for device copies, "
                  f"{w['writer']:.2f} s for writes, of {r['seconds']:.2f} s")
    print("time line (seconds from the start until a batch was done; steady = images/s over the last 3/4):")
    for name, r in rows[1:]:
        times = r["batch_done_seconds"]
        steady = steady_rate(times, args.batch_size)
        if steady:
            k = len(times) // 4
            print(f"{name.strip():70s} first {times[0]:.2f} s, batch {k + 1} at {times[k]:.2f} s, "
                  f"last {times[-1]:.2f} s of {r['seconds']:.2f} s; steady {steady:.1f} images/s")
    ratio = full_large["images_per_second"] / bare["images_per_second"]
    print(f"ratio full / bare images/s at N={large}: {ratio:.3f} (target >= 0.85)")
    steady = [steady_rate(r["batch_done_seconds"], args.batch_size) for r in (full_large, bare)]
    if all(steady):
        print(f"ratio of the steady rates (last 3/4 of the batches): {steady[0] / steady[1]:.3f}")
    rss = full_large["peak_rss_mib"] / full["peak_rss_mib"]
    print(f"peak RSS at {large} / at {args.n} images: {rss:.3f} (target <= 1.1)")
    if args.device.startswith("cuda"):
        print(f"peak CUDA at {large} / at {args.n} images: {full_large['peak_cuda_mib'] / full['peak_cuda_mib']:.3f}")


if __name__ == "__main__":
    main()
