"""The Slurm profile against a real Slurm: a controller and a node on this host run the tiny
workflow through `--profile profiles/slurm`, and every output equals the local run's
(the session's TINY run, tests/conftest.py).

Needs root, Debian's slurmctld, slurmd and slurm-client, and the executor plugin in
.venv-slurm (`make slurm-venv`; docs/development.md). Skipped where any is missing,
except under CI (the CI variable set), where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from h5compare import h5_items
from test_workflow import TINY, copy_workflow

REPO = Path(__file__).resolve().parents[1]
SLURM_PYTHON = Path(os.environ.get("VITSCOPE_SLURM_PYTHON", REPO / ".venv-slurm" / "bin" / "python"))
SBIN = os.pathsep.join(["/usr/sbin", "/sbin", os.environ.get("PATH", "")])
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo", "sacct")
SNAKEMAKE_TIMEOUT = 600

# The tiny models on one dataset: extraction in SHARDS shard jobs per model (GPU jobs) and their
# merge (docs/dumps.md#sharding), tables of the `tables` group and figures (local rules).
# device auto asks Slurm for a GPU and falls back to the CPU.
SHARDS = 2
CONFIG = {
    "models": TINY["models"],
    "datasets": {"toy": {**TINY["datasets"]["toy"], "shards": SHARDS}},
    "extract": {**TINY["extract"], "device": "auto"},
    "analyses": {
        "attention_distance": {"datasets": ["toy"]},
        "cka": {"datasets": ["toy"]},
    },
    "figures": TINY["figures"],
}


def unavailable(reason: str) -> None:
    """Skip, or fail under CI, where the Slurm test must run."""
    message = f"Slurm test not run: {reason} (docs/development.md, 'The Slurm test')"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slurm_conf(root: Path, node: str) -> str:
    """slurm.conf of a one-node cluster on localhost: the node as `slurmd -C` sees it, one pretend GPU."""
    return f"""\
ClusterName=vitscope-test
SlurmctldHost={node.split()[0].removeprefix("NodeName=")}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
# squeue reports a finished job for MinJobAge seconds (the profile's status command)
MinJobAge=300
KillWait=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
GresTypes=gpu
{node} NodeAddr=127.0.0.1 Gres=gpu:1 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@pytest.mark.workflow
def test_profile_groups_name_existing_rules_and_no_figure(tmp_path: Path) -> None:
    """Runs without Slurm: a renamed rule would silently leave its group; a grouped figure cannot be local."""
    workdir = copy_workflow(tmp_path, TINY)
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    listed = subprocess.run([snakemake, "--list-rules"], cwd=workdir, capture_output=True, text=True, check=True)
    rules = set(listed.stdout.split())
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    grouped = dict(entry.split("=") for entry in profile["groups"])
    assert set(grouped) <= rules, set(grouped) - rules
    assert not [rule for rule in grouped if rule.startswith("plot_")]
    assert set(grouped.values()) == {entry.split("=")[0] for entry in profile["group-components"]}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A running controller and node; yields the environment that points Slurm's clients at them."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        unavailable("slurmd must run as root")
    missing = [cmd for cmd in ("slurmctld", "slurmd", *CLIENTS) if not shutil.which(cmd, path=SBIN)]
    if missing:
        unavailable(f"{', '.join(missing)} not found (apt-get install slurmctld slurmd slurm-client)")
    plugin = [str(SLURM_PYTHON), "-c", "import snakemake_executor_plugin_slurm"]
    if not SLURM_PYTHON.is_file() or subprocess.run(plugin, capture_output=True).returncode != 0:
        unavailable(f"{SLURM_PYTHON} cannot import snakemake_executor_plugin_slurm (make slurm-venv)")

    root = tmp_path_factory.mktemp("slurm")
    for name in ("state", "spool", "bin"):
        (root / name).mkdir()
    node = subprocess.run(
        [shutil.which("slurmd", path=SBIN), "-C"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, node))
    (root / "gres.conf").write_text(f"{node.split()[0]} Name=gpu File=/dev/null\n")
    # The plugin's job step drops SLURM_* variables before it calls srun, so every
    # client is wrapped to read this cluster's config (never the host's own cluster).
    for cmd in CLIENTS:
        wrapper = root / "bin" / cmd
        wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which(cmd, path=SBIN)} "$@"\n')
        wrapper.chmod(0o755)
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}"}

    daemons = [
        subprocess.Popen([shutil.which(d, path=SBIN), "-D", "-f", str(conf)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for d in ("slurmctld", "slurmd")
    ]
    try:
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline and state != "idle":
            if any(d.poll() is not None for d in daemons):
                break
            proc = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            state = proc.stdout.strip()
            time.sleep(0.5)
        if state != "idle":
            logs = "\n".join(
                f"--- {name}\n" + (root / name).read_text()[-3000:]
                for name in ("slurmctld.log", "slurmd.log") if (root / name).is_file()
            )
            unavailable(f"the node did not come up (sinfo: {state or 'no answer'})\n{logs}")
        yield env
    finally:
        subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True)
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def run(cmd: list[str], workdir: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, what: str) -> str:
    try:
        out, _ = proc.communicate(timeout=SNAKEMAKE_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"{what} did not finish in {SNAKEMAKE_TIMEOUT} s:\n{out}") from None
    if proc.returncode != 0:
        raise AssertionError(f"{what} failed:\n{out}")
    return out


@pytest.fixture(scope="module")
def runs(slurm: dict[str, str], request, tmp_path_factory) -> tuple[Path, Path, str]:
    """CONFIG run on Slurm, and the session's local run of TINY (tests/conftest.py), of which
    CONFIG is a part; returns both folders and the Slurm log.

    The Slurm run mostly waits (the plugin polls squeue at growing intervals), so it is
    started first and the TINY runs go beside it: conftest.py puts the Slurm tests at the
    front of the session, so they are the first to ask for the TINY run.
    """
    cluster = copy_workflow(tmp_path_factory.mktemp("cluster"), CONFIG)
    on_slurm = run(
        [str(SLURM_PYTHON), "-m", "snakemake", "--profile", "profiles/slurm", "--cores", "2",
         "--retries", "0", "--latency-wait", "5", "--slurm-init-seconds-before-status-checks", "1"],
        cluster, slurm,
    )
    try:
        local = request.getfixturevalue("tiny_run")
    except BaseException:
        on_slurm.kill()
        on_slurm.communicate()
        raise
    log = finish(on_slurm, "the Slurm run")
    return local, cluster, log


def files(root: Path) -> set[str]:
    """Every result file, but timings (benchmarks) and figures (PDF/PNG metadata)."""
    return {
        p.relative_to(root).as_posix()
        for p in (root / "results").rglob("*")
        if p.is_file() and "benchmarks" not in p.parts and p.suffix not in (".pdf", ".png")
    }




@pytest.mark.slurm
@pytest.mark.workflow
def test_slurm_run_submits_gpu_extraction_shards_groups_tables_and_keeps_figures_local(runs) -> None:
    _, cluster, log = runs
    # the SLURM log folder of each submitted job: rule_<rule> or group_<group>_<rules>
    submitted = re.findall(r"submitted with SLURM jobid \d+ \(log: .*/slurm_logs/([^/]+)/", log)
    # the sharded dataset: SHARDS extraction jobs per model, then one merge job each
    assert submitted.count("rule_extract_shard") == SHARDS * len(CONFIG["models"]), log
    assert submitted.count("rule_merge_shards") == len(CONFIG["models"]), submitted
    assert "rule_extract" not in submitted, submitted
    # models the workflow trains (TINY's tiny_a) are one sbatch job each, like extraction
    trained = [m for m, entry in CONFIG["models"].items() if "train" in entry]
    assert submitted.count("rule_train") == len(trained), submitted
    jobs = ("rule_extract_shard", "rule_merge_shards", "rule_train")
    groups = [s for s in submitted if s not in jobs]
    assert groups and all(s.startswith(("group_inputs_", "group_tables_")) for s in groups), submitted
    assert any(s.startswith("group_tables_") for s in groups), submitted
    assert not any("plot_" in s for s in submitted), submitted  # figures are local rules
    for model in CONFIG["models"]:
        for shard in range(1, SHARDS + 1):
            extract_log = (cluster / f"logs/extract_shard/{model}/toy/{shard}-of-{SHARDS}.log").read_text()
            # the job was given a (pretend) GPU that torch cannot use: the fallback is a warning
            assert re.search(r"WARNING .*CUDA_VISIBLE_DEVICES=0 .*falling back to the CPU", extract_log), extract_log
        assert f"merged {SHARDS} shards" in (cluster / f"logs/merge_shards/{model}/toy.log").read_text()
    # the shard files are temporary: removed once merged
    assert not list((cluster / "results/shards").rglob("*.h5"))


@pytest.mark.slurm
@pytest.mark.workflow
def test_slurm_outputs_equal_local_outputs(runs) -> None:
    """Every output of the Slurm run equals the same file of the local TINY run (TINY makes
    more: its other datasets and analyses): the dumps merged from shards equal TINY's unsharded ones."""
    local, cluster, _ = runs
    assert files(cluster) <= files(local), sorted(files(cluster) - files(local))
    assert any(name.endswith(".h5") for name in files(cluster))
    assert any(name.startswith("results/checkpoints/") for name in files(cluster))
    for name in sorted(files(cluster)):
        a, b = local / name, cluster / name
        if a.suffix == ".h5":
            assert h5_items(a) == h5_items(b), name
        elif a.suffix == ".npz":
            with np.load(a) as x, np.load(b) as y:
                assert sorted(x) == sorted(y), name
                for key in x:
                    assert x[key].dtype == y[key].dtype and x[key].tobytes() == y[key].tobytes(), (name, key)
        else:
            assert a.read_bytes() == b.read_bytes(), name
    for figure in ("attention_distance/toy.png", "cka_last/toy.png", "cka_full/toy/tiny_a/tiny_b.png"):
        assert (cluster / "results/figures" / figure).stat().st_size > 1000
