"""What the dataset fingerprints cost the planning of a run (vitscope.io.fingerprint, rules/common.smk).

Builds a tree of N empty-ish files in ImageNet's layout (K class folders), then times, each
from a cold in-process cache (the file system's own cache is warm after the first pass,
as it is for a user who plans twice):

- ``folders`` in every mode: what the index checkpoint's parameter costs (one scan);
- ``files`` over all N paths after the scan: what each dump's ``images`` parameter adds
  (stamps looked up, not stat-ed again), and the index CSV read it needs;
- with ``--dry-run``, ``snakemake -n`` of a config holding that one dataset, with and
  without a fingerprint (``fingerprint: off``), so the difference is the fingerprint's.

Prints one table; the ImageNet-1k projection (1,281,167 files) scales linearly.

    python benchmarks/fingerprint.py --files 100000 --classes 1000 --dry-run
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from vitscope.io import fingerprint  # noqa: E402

IMAGENET_TRAIN = 1_281_167


def make_tree(root: Path, files: int, classes: int) -> list[str]:
    paths = []
    per = -(-files // classes)
    for c in range(classes):
        folder = root / f"n{c:08d}"
        folder.mkdir(parents=True)
        for i in range(min(per, files - len(paths))):
            path = folder / f"n{c:08d}_{i}.JPEG"
            path.write_bytes(b"x" * (i % 97))
            paths.append(str(path))
    return paths


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        fingerprint.forget()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dry_run(work: Path, root: Path, mode: str) -> float:
    config = (
        "models:\n  m: {arch: test_vit, weights: random, image_size: 32}\n"
        f"datasets:\n  big: {{kind: imagefolder, root: '{root}', fingerprint: '{mode}'}}\n"
        "analyses:\n  attention_distance: {datasets: [big]}\n"
    )
    (work / "bench.yaml").write_text(config)
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    start = time.perf_counter()
    subprocess.run(
        [snakemake, "-n", "--snakefile", str(REPO / "Snakefile"), "--configfile", "bench.yaml",
         "--directory", str(work), "results/index/big.csv"],
        cwd=work, check=True, capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dry-run", action="store_true", help="also time snakemake -n on the tree")
    parser.add_argument("--dir", help="where to build the tree (default: a temporary folder)")
    args = parser.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="vitscope-fp-"))
    root = base / "train"
    try:
        paths = make_tree(root, args.files, args.classes)
        folders = [str(root / name) for name in sorted(p.name for p in root.iterdir())]
        rows = []
        for mode in ("stat", "listing", "content"):
            t = timed(lambda mode=mode: fingerprint.folders(folders, mode), args.repeat)
            rows.append((f"folders, mode {mode}", t))
        index = base / "index.csv"
        with open(index, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "class"])
            writer.writerows([p, 0, ""] for p in paths)

        def after_scan() -> None:
            fingerprint.folders(folders, "stat")
            start = time.perf_counter()
            with open(index, newline="") as handle:
                listed = [row[0] for row in csv.reader(handle)][1:]
            fingerprint.files(listed, "stat")
            rows_after.append(time.perf_counter() - start)

        rows_after: list[float] = []
        timed(after_scan, args.repeat)
        rows.append(("index read + files (after the scan)", statistics.median(rows_after)))
        if args.dry_run:
            work = base / "work"
            work.mkdir()
            dry = {mode: statistics.median(dry_run(work, root, mode) for _ in range(args.repeat))
                   for mode in ("off", "stat", "listing")}
            rows += [(f"snakemake -n, fingerprint {mode}", t) for mode, t in dry.items()]
        print(f"{args.files} files in {args.classes} folders (median of {args.repeat}); "
              f"projection to ImageNet-1k train ({IMAGENET_TRAIN:,} files) scales linearly")
        print("| step | seconds | us per file | ImageNet-1k train, s |\n|---|---|---|---|")
        for name, t in rows:
            per = t / args.files * 1e6
            print(f"| {name} | {t:.3f} | {per:.2f} | {per * IMAGENET_TRAIN / 1e6:.1f} |")
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
