"""Benchmark suite: every measured part of vitscope in one run, one table.

Parts (each can be chosen with ``--parts``):

- ``extract``: full extraction against a bare fused forward (images/s and their
  ratio) and peak resident memory at N and 8N images; reuses
  ``benchmarks/extract.py`` (each measurement in a fresh process).
- ``dag``: wall time of ``snakemake --dry-run`` on ``configs/study_all.yaml``
  (every family in every size, every analysis), as a user waits for it: process
  start, parsing, config validation, DAG building and job listing. The real
  weights and datasets are absent, so the config's ``/path/to/...`` roots are
  pointed at a temporary tree holding empty stand-ins for the files Snakemake
  checks as inputs (checkpoints, COCO annotations, revisited ground truth); no
  job is run, so their content is never read. ``snakemake --list-rules`` with
  the same config (everything but the DAG) is timed too, and a bare Snakefile
  with the same jobs (Snakemake's floor); ``benchmarks/dag.py`` does the work.
- ``attention``: the vectorised aligned attention map (``attention.align``, one
  scatter-add) and offset (``attention.offset``) against straightforward loop
  versions over queries and heads, on one block of a batch, and their ratio.
- ``label_propagation``: the DAVIS label propagation kernel, run by
  ``benchmarks/label_propagation.py`` when that file exists (see
  :func:`label_propagation_part` for the hook it plugs into); skipped otherwise.

Not a test: run it by hand, ``python benchmarks/suite.py [--quick]``, and
record the numbers in docs/performance.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


class Row(NamedTuple):
    """One line of the table: part, what was measured, value, unit, note."""

    part: str
    name: str
    value: float
    unit: str
    note: str = ""


def _module(name: str):
    """A sibling benchmark script as a module (``benchmarks/`` is not a package)."""
    path = HERE / f"{name}.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"vitscope_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timeit(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --------------------------------------------------------------------------- extraction


def extract_part(args: argparse.Namespace) -> list[Row]:
    bench = _module("extract")
    from vitscope.io import synthetic

    opts = argparse.Namespace(
        arch=args.arch, image_size=args.image_size, batch_size=args.batch_size, device=args.device,
        workers=args.workers, threads=args.threads,
    )
    large = 8 * args.n
    with tempfile.TemporaryDirectory() as root:
        per_class = max(1, min(large, 1024) // 8)
        synthetic.write_imagefolder(root, synthetic.SyntheticSpec(classes=8, per_class=per_class, image_size=256))
        bench.measure(opts, root, "bare", args.batch_size)  # warm caches (disk, allocator) once
        bare = bench.measure(opts, root, "bare", large)
        full = bench.measure(opts, root, "full", args.n)
        full_large = bench.measure(opts, root, "full", large)
    steady = [bench.steady_rate(r["batch_done_seconds"], args.batch_size) for r in (full_large, bare)]
    what = f"{args.arch} {args.image_size}px, batch {args.batch_size}, {args.device}"
    return [
        Row("extract", f"bare fused forward, N={large}", bare["images_per_second"], "images/s", what),
        Row("extract", f"full extraction, N={large}", full_large["images_per_second"], "images/s"),
        Row("extract", "ratio full / bare", full_large["images_per_second"] / bare["images_per_second"], "x",
            "target >= 0.85"),
        *(
            [Row("extract", "ratio of the steady rates", steady[0] / steady[1], "x", "last 3/4 of the batches")]
            if all(steady) else []
        ),
        Row("extract", f"peak RSS, full extraction N={args.n}", full["peak_rss_mib"], "MiB"),
        Row("extract", f"peak RSS, full extraction N={large}", full_large["peak_rss_mib"], "MiB"),
        Row("extract", f"peak RSS ratio {large} / {args.n}", full_large["peak_rss_mib"] / full["peak_rss_mib"], "x",
            "target <= 1.1"),
    ]


# --------------------------------------------------------------------------- DAG


def fake_study_tree(config_file: Path, workdir: Path) -> tuple[Path, int]:
    """Copy the workflow to ``workdir`` with ``config_file`` rewritten so its ``/path/to/``
    roots lie in ``workdir/data``, and empty stand-ins for every file the DAG checks.

    Returns the rewritten config and the number of stand-in files.
    """
    import yaml

    for name in ("Snakefile", "rules", "workflow", "src"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, workdir / name)
    data = workdir / "data"

    def relocate(value):
        if isinstance(value, dict):
            return {k: relocate(v) for k, v in value.items()}
        if isinstance(value, list):
            return [relocate(v) for v in value]
        if isinstance(value, str) and value.startswith("/path/to/"):
            return str(data / value[len("/path/to/") :])
        return value

    config = relocate(yaml.safe_load(config_file.read_text()))
    sys.path.insert(0, str(REPO / "src"))
    from vitscope.workflow import inputs

    files = [workdir / m["checkpoint"] for m in config["models"].values() if "checkpoint" in m]
    folders = []
    for name, entry in config["datasets"].items():
        for need in inputs.dataset_paths(name, entry):  # every path the dry run checks
            (folders if need.kind == "dir" else files).append(Path(need.path))
        if entry.get("kind") == "davis":  # the study's 30 val sequences, one folder each
            sequences = [f"sequence-{i:02d}" for i in range(30)]
            listing = Path(entry["root"]) / "ImageSets" / "2017" / f"{entry.get('split', 'val')}.txt"
            listing.parent.mkdir(parents=True, exist_ok=True)
            listing.write_text("\n".join(sequences) + "\n")
            for part in ("JPEGImages", "Annotations"):
                folders += [Path(entry["root"]) / part / entry.get("resolution", "480p") / s for s in sequences]
    for path in folders:
        path.mkdir(parents=True, exist_ok=True)
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    out = workdir / "study.yaml"
    out.write_text(yaml.safe_dump(config))
    return out, len(files)


def dag_part(args: argparse.Namespace) -> list[Row]:
    """benchmarks/dag.py: the study's dry run, its parse alone and a bare Snakefile of the same jobs."""
    dag = _module("dag")
    result = dag.measure(args.dag_config, args.repeat)
    return [Row("dag", name, value, "x" if name.startswith("bare /") else "s", note)
            for name, value, note in dag.rows(result)]


# --------------------------------------------------------------------------- attention kernel


def align_loop(spatial, grid):
    """Loop version of ``attention.align``: every query's (gh, gw) key map added at its shift."""
    import torch

    gh, gw = grid
    out = torch.zeros(*spatial.shape[:-2], 2 * gh - 1, 2 * gw - 1, dtype=spatial.dtype)
    for i in range(gh):
        for j in range(gw):
            key_map = spatial[..., i * gw + j, :].reshape(*spatial.shape[:-2], gh, gw)
            out[..., gh - 1 - i : 2 * gh - 1 - i, gw - 1 - j : 2 * gw - 1 - j] += key_map
    return out


def offset_loop(aligned):
    """Loop version of ``attention.offset`` over every map: centre of mass, then its norm."""
    import math

    import torch

    h, w = aligned.shape[-2:]
    scale = max((max(h, w) - 1) / 2, 1.0)
    flat = aligned.reshape(-1, h, w)
    out = torch.empty(flat.shape[0], dtype=aligned.dtype)
    for n in range(flat.shape[0]):
        total = cx = cy = 0.0
        for r in range(h):
            for c in range(w):
                m = float(flat[n, r, c])
                total += m
                cx += m * (c - (w - 1) / 2) / scale
                cy += m * (r - (h - 1) / 2) / scale
        out[n] = math.hypot(cx / total, cy / total)
    return out.reshape(aligned.shape[:-2])


def attention_part(args: argparse.Namespace) -> list[Row]:
    import torch

    from vitscope.attention import metrics as attention

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    grid, batch, heads = (args.grid, args.grid), args.attention_batch, 12
    g = grid[0] * grid[1]
    spatial = torch.softmax(torch.randn(batch, heads, g, g, dtype=torch.float64), dim=-1)
    fast = attention.align(spatial, grid)
    torch.testing.assert_close(fast, align_loop(spatial, grid), rtol=0, atol=1e-12)
    t_fast = _timeit(lambda: attention.align(spatial, grid), args.repeat)
    t_loop = _timeit(lambda: align_loop(spatial, grid), args.repeat)
    maps = fast.reshape(-1, *fast.shape[-2:])
    torch.testing.assert_close(attention.offset(maps), offset_loop(maps), rtol=1e-9, atol=1e-12)
    o_fast = _timeit(lambda: attention.offset(maps), args.repeat)
    o_loop = _timeit(lambda: offset_loop(maps), max(1, args.repeat // 2))
    shape = f"({batch}, {heads}, {g}, {g}) float64, grid {grid[0]}x{grid[1]}"
    return [
        Row("attention", "align (scatter-add), one block of a batch", t_fast * 1e3, "ms", shape),
        Row("attention", "align, loop over queries", t_loop * 1e3, "ms"),
        Row("attention", "align speed-up loop / vectorised", t_loop / t_fast, "x", "results equal (atol 1e-12)"),
        Row("attention", f"offset (centre of mass), {len(maps)} maps", o_fast * 1e3, "ms"),
        Row("attention", "offset, loop over maps and cells", o_loop * 1e3, "ms"),
        Row("attention", "offset speed-up loop / vectorised", o_loop / o_fast, "x"),
    ]


# --------------------------------------------------------------------------- label propagation (hook)


def label_propagation_part(args: argparse.Namespace) -> list[Row] | None:
    """Hook for the DAVIS label propagation kernel.

    ``benchmarks/label_propagation.py`` plugs in by exposing
    ``benchmark(quick: bool) -> list[tuple[str, float, str, str]]``: rows of
    (what was measured, value, unit, note), e.g. the vectorised kernel and a loop
    version in ms and their ratio. Until that file exists the part is skipped.
    """
    module = _module("label_propagation")
    if module is None:
        return None
    return [Row("label_propagation", *row) for row in module.benchmark(quick=args.quick)]


PARTS: dict[str, Callable[[argparse.Namespace], list[Row] | None]] = {
    "extract": extract_part,
    "dag": dag_part,
    "attention": attention_part,
    "label_propagation": label_propagation_part,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not numbers to record)")
    parser.add_argument("--arch", default="vit_small_patch16_224")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n", type=int, default=128, help="images of the smaller extraction (the larger has 8x)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dag-config", default="configs/study_all.yaml")
    parser.add_argument("--grid", type=int, default=14, help="token grid of the attention kernel (14: ViT-B/16)")
    parser.add_argument("--attention-batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.arch, args.image_size, args.batch_size, args.n = "test_vit", 32, 4, 8
        args.repeat, args.attention_batch, args.grid = 1, 2, 7
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {list(PARTS)}")

    rows: list[Row] = []
    skipped: list[str] = []
    for name in parts:
        start = time.perf_counter()
        result = PARTS[name](args)
        if result is None:
            skipped.append(name)
        else:
            rows += result
            print(f"[{name}: {time.perf_counter() - start:.0f} s] {result}", file=sys.stderr, flush=True)

    print(f"machine: {platform.processor() or platform.machine()}, {_cpus()} CPUs, python {platform.python_version()}")
    print(f"{'part':18s}{'measurement':48s}{'value':>12s}  {'unit':9s}note")
    for row in rows:
        print(f"{row.part:18s}{row.name:48s}{row.value:12.3f}  {row.unit:9s}{row.note}")
    for name in skipped:
        print(f"{name:18s}skipped (benchmarks/{name}.py not present)")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    main()
