"""How long `snakemake --dry-run` of the study takes, and what Snakemake itself bounds it at.

Three timings, each the fastest of ``--repeat`` runs (the machine is shared: the fastest run is
the one least disturbed by the others; the median is printed too), each a fresh process:

- ``study``: ``snakemake --dry-run --quiet rules`` on ``configs/study_all.yaml`` (every family in
  every size, every analysis), in a copy of the workflow whose ``/path/to/...`` roots point at a
  temporary tree of empty stand-ins (``benchmarks/suite.py``'s ``fake_study_tree``);
- ``parse``: ``snakemake --list-rules`` on the same (start, parsing, config checks; no DAG);
- ``bare``: a bare Snakefile with the same rules and the same number of jobs of each, each job
  reading one file of the rule before it (patterns only: no input functions, params, resources,
  conda, logs or scripts) — the floor Snakemake puts under a DAG of that size.

``python benchmarks/dag.py [--repeat 5]``; ``benchmarks/suite.py --parts dag`` prints the same rows.
Record the numbers with the load average (printed) in docs/performance.md, "Planning the study's DAG".
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


def _suite():
    spec = importlib.util.spec_from_file_location("vitscope_bench_suite", HERE / "suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def snakemake(workdir: Path, *args: str) -> tuple[float, float, str]:
    """Wall seconds and CPU seconds (user + system) of one ``snakemake`` process in ``workdir``, and
    what it printed. The CPU time is less disturbed by the machine's other work than the wall time."""
    exe = str(Path(sys.executable).with_name("snakemake"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([exe, *args], cwd=workdir, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, cpu, proc.stdout + proc.stderr


def job_counts(text: str) -> dict[str, int]:
    """rule -> jobs, from the job table a dry run prints (``total`` left out)."""
    table = text[text.index("job ") :] if "job " in text else text
    counts = {}
    for name, count in re.findall(r"^([A-Za-z_][\w]*)\s+(\d+)$", table, flags=re.M):
        if name != "total":
            counts.setdefault(name, int(count))
    return counts


def bare_snakefile(counts: dict[str, int]) -> str:
    """A Snakefile of the same rules and jobs per rule: rule r makes bare/r/{i}.txt from the
    previous rule's bare/q/{i}.txt (rules in decreasing job count, so that file exists)."""
    rules = sorted(((n, r) for r, n in counts.items() if r != "all"), reverse=True)
    lines = ["rule all:", "    input:"]
    lines += [f'        expand("bare/{r}/{{i}}.txt", i=range({n})),' for n, r in rules]
    previous = None
    for _, r in rules:
        lines += ["", "", f"rule {r}:"]
        if previous:
            lines += ["    input:", f'        "bare/{previous}/{{i}}.txt",']
        lines += ["    output:", f'        "bare/{r}/{{i}}.txt",', "    shell:", '        "touch {output}"']
        previous = r
    return "\n".join(lines) + "\n"


def measure(config: str = "configs/study_all.yaml", repeat: int = 5) -> dict[str, object]:
    """The three timings (min and median seconds), the job count and the load average before and after."""
    load_before = os.getloadavg()
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "study"
        workdir.mkdir()
        study, stand_ins = _suite().fake_study_tree(REPO / config, workdir)
        common = ["--configfile", str(study), "--cores", "1"]
        bare = Path(tmp) / "bare"
        bare.mkdir()
        times: dict[str, list[tuple[float, float]]] = {"study": [], "parse": [], "bare": []}
        for i in range(repeat):  # interleaved, so a busy spell of the machine hits all three alike
            *timing, text = snakemake(workdir, *common, "--dry-run", "--quiet", "rules")
            times["study"].append(tuple(timing))
            if i == 0:
                counts = job_counts(text)
                (bare / "Snakefile").write_text(bare_snakefile(counts))
            times["parse"].append(tuple(snakemake(workdir, *common, "--list-rules")[:2]))
            *timing, bare_text = snakemake(bare, "--cores", "1", "--dry-run", "--quiet", "rules")
            times["bare"].append(tuple(timing))
        bare_jobs = sum(job_counts(bare_text).values())
    for name, values in times.items():
        walls, cpus = [v[0] for v in values], [v[1] for v in values]
        out[name] = (min(walls), statistics.median(walls), min(cpus))
    out.update(jobs=sum(counts.values()), bare_jobs=bare_jobs, stand_ins=stand_ins, repeat=repeat,
               load=(load_before, os.getloadavg()))
    return out


def rows(result: dict[str, object]) -> list[tuple[str, float, str]]:
    """(measurement, seconds, note) lines for the suite's table: wall and CPU seconds, the fastest run each."""
    before, after = result["load"]
    load = f"load average {before[0]:.1f} before, {after[0]:.1f} after"
    names = {
        "study": f"dry run, study ({result['jobs']} jobs)",
        "parse": "list-rules, study (start + parse)",
        "bare": f"dry run, bare Snakefile ({result['bare_jobs']} jobs)",
    }
    out = []
    for key, name in names.items():
        wall, median, cpu = result[key]
        out.append((f"{name}, wall", wall, f"min of {result['repeat']} (median {median:.2f} s); {load}"))
        out.append((f"{name}, CPU", cpu, f"user + system, min of {result['repeat']}"))
    study, bare = result["study"][2], result["bare"][2]
    out.append(("bare / study, CPU (Snakemake's floor)", bare / study, ""))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/study_all.yaml")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for name, value, note in rows(measure(args.config, args.repeat)):
        print(f"{name:60s}{value:10.3f}  {note}")


if __name__ == "__main__":
    main()
