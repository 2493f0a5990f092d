"""k-NN at scale: today's per-block code (`knn.nearest` on `tokens/cls[:, block]`, what `block_rows` did
before `nearest_blocks`) against `knn.nearest_blocks` (the bank streamed once for all blocks), on an HDF5
bank of random features chunked as the dump writes `tokens/cls` (`vitscope.io.dumps.create_dataset`).

Each code runs in its own process (so its peak RSS, `resource.getrusage(RUSAGE_SELF).ru_maxrss`, is its
own), with the same BLAS / torch threads; the parent checks that both give the same neighbours and
similarities, bit for bit. Reported per code: wall seconds, CPU seconds (user + system, all threads),
the bytes read from the bank file (`/proc/self/io` `rchar`: bytes through read(2)/pread(2), page cache
hits included, so it counts what HDF5 reads whatever is cached; `read_bytes`, the disk reads, is given
too but is ~0 on a warm cache), the bytes the code asked for (the arrays the slices returned), the peak
RSS, and the load average (`os.getloadavg`) before and after.

    python benchmarks/knn_scale.py --n 200000 --blocks 1 --dim 384 --queries 2000
    python benchmarks/knn_scale.py --n 20000 --blocks 12 --dim 384 --queries 2000 --dtype float16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def io_counters() -> dict[str, int]:
    """rchar / read_bytes of this process (/proc/self/io; zeros where it does not exist)."""
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return {"rchar": 0, "read_bytes": 0}
    fields = dict(line.split(": ") for line in text.splitlines())
    return {"rchar": int(fields["rchar"]), "read_bytes": int(fields["read_bytes"])}


def build(path: Path, n: int, blocks: int, dim: int, queries: int, dtype: str, seed: int, rows: int | None) -> None:
    """tokens/cls (n, blocks, dim) and queries/cls (queries, blocks, dim) of random normal features, chunked
    as the dump writes tokens (or ``rows`` images per chunk), written in runs of images."""
    from vitscope.io import dumps

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w", libver=dumps.LIBVER) as f:
        for name, count in (("tokens/cls", n), ("queries/cls", queries)):
            shape = (count, blocks, dim)
            chunks = dumps.chunk_shape(shape, dtype, rows=rows or token_rows(shape, dtype))
            ds = dumps.create_dataset(f, name, shape, dtype, chunks=chunks)
            step = max(1, (64 << 20) // (blocks * dim * 8))
            for s0 in range(0, count, step):
                s1 = min(count, s0 + step)
                ds[s0:s1] = rng.standard_normal((s1 - s0, blocks, dim), dtype=np.float32).astype(dtype)


def token_rows(shape: tuple[int, ...], dtype: str) -> int:
    """Images per chunk of a tokens dataset as the dump writes it."""
    from vitscope.io import dumps

    rows = getattr(dumps, "token_chunk_rows", None)
    return rows(shape, dtype) if rows else 1


class Counted:
    """An h5py dataset that counts the bytes its slices return (what the code asked for)."""

    def __init__(self, dataset: h5py.Dataset):
        self.dataset, self.shape, self.dtype, self.asked = dataset, dataset.shape, dataset.dtype, 0

    def __getitem__(self, key):
        out = self.dataset[key]
        self.asked += out.nbytes
        return out


def run(code: str, path: Path, out: Path, k: int, query_chunk: int, bank_chunk: int, threads: int) -> dict:
    """One code on the bank in ``path``; the neighbours are saved to ``out`` (npz)."""
    import torch
    from threadpoolctl import threadpool_limits

    from vitscope.tasks import knn

    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    with threadpool_limits(threads), h5py.File(path) as f:
        bank, queries = Counted(f["tokens/cls"]), Counted(f["queries/cls"])
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        io0, cpu0, wall0 = io_counters(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        if code == "per_block":
            out_vals, out_idx = [], []
            for block in range(bank.shape[1]):
                sims, idx = knn.nearest(
                    np.asarray(bank[:, block]), np.asarray(queries[:, block]), k, query_chunk, bank_chunk
                )
                out_vals.append(sims)
                out_idx.append(idx)
            sims, idx = np.stack(out_vals), np.stack(out_idx)
        else:
            sims, idx = knn.nearest_blocks(bank, queries, k, query_chunk, bank_chunk, "cpu")
        wall = time.perf_counter() - wall0
        cpu1, io1 = resource.getrusage(resource.RUSAGE_SELF), io_counters()
    np.savez(out, sims=sims, idx=idx)
    return {
        "code": code,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 3),
        "rchar": io1["rchar"] - io0["rchar"],
        "read_bytes": io1["read_bytes"] - io0["read_bytes"],
        "asked_bytes": bank.asked + queries.asked,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_mib": round(rss0 / 1024, 1),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000, help="bank images N")
    parser.add_argument("--blocks", type=int, default=1, help="blocks L")
    parser.add_argument("--dim", type=int, default=384, help="width D")
    parser.add_argument("--queries", type=int, default=2000, help="query images M")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--k", type=int, default=200, help="neighbours (the largest of analyses.knn.ks)")
    parser.add_argument("--query-chunk", type=int, default=1024)
    parser.add_argument("--bank-chunk", type=int, default=65536)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows-per-chunk", type=int, default=None, help="HDF5 chunk rows (default: as the dump)")
    parser.add_argument("--codes", default="per_block,nearest_blocks", help="which codes to time, in order")
    parser.add_argument("--dir", default=None, help="where the bank file goes (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # internal: code,bank,out
    args = parser.parse_args()
    if args.run:
        code, bank, out = args.run.split(",")
        print(json.dumps(run(code, Path(bank), Path(out), args.k, args.query_chunk, args.bank_chunk, args.threads)))
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bank.h5"
        t0 = time.perf_counter()
        build(path, args.n, args.blocks, args.dim, args.queries, args.dtype, args.seed, args.rows_per_chunk)
        with h5py.File(path) as f:
            chunks = f["tokens/cls"].chunks
        bank_bytes = args.n * args.blocks * args.dim * np.dtype(args.dtype).itemsize
        print(f"bank {args.n} x {args.blocks} x {args.dim} {args.dtype} ({bank_bytes / 2**20:.1f} MiB, chunks "
              f"{chunks}, file {path.stat().st_size / 2**20:.1f} MiB), {args.queries} queries, k={args.k}, "
              f"threads {args.threads}; built in {time.perf_counter() - t0:.1f} s", flush=True)
        results = {}
        for code in args.codes.split(","):
            cmd = [sys.executable, __file__, "--run", f"{code},{path},{Path(tmp) / code}.npz"] + [
                f"--{name}={getattr(args, name.replace('-', '_'))}"
                for name in ("k", "query-chunk", "bank-chunk", "threads")
            ]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            results[code] = json.loads(line)
            r = results[code]
            print(f"{code:>15}: {r['wall_s']:8.2f} s wall {r['cpu_s']:8.2f} s CPU  read {r['rchar'] / 2**20:9.1f} MiB "
                  f"({r['rchar'] / bank_bytes:5.2f} x bank; disk {r['read_bytes'] / 2**20:.1f} MiB; asked "
                  f"{r['asked_bytes'] / 2**20:.1f} MiB)  peak RSS {r['peak_rss_mib']:8.1f} MiB "
                  f"(before {r['rss_before_mib']:.0f})  load "
                  f"{r['load_before']} -> {r['load_after']}", flush=True)
        codes = list(results)
        if len(codes) == 2:
            a, b = (np.load(Path(tmp) / f"{c}.npz") for c in codes)
            same = all(np.array_equal(a[key], b[key]) for key in ("sims", "idx"))
            ra, rb = results[codes[0]], results[codes[1]]
            print(f"identical neighbours and similarities: {same}; {codes[0]} / {codes[1]}: wall "
                  f"{ra['wall_s'] / rb['wall_s']:.2f}x, CPU {ra['cpu_s'] / rb['cpu_s']:.2f}x, read "
                  f"{ra['rchar'] / max(rb['rchar'], 1):.2f}x")
            if not same:
                sys.exit(1)


if __name__ == "__main__":
    main()
