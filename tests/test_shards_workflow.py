"""Sharded extraction in the workflow (docs/dumps.md#sharding): a TINY-like config with
`shards: 3` (and 2 for the coco dataset) against the same config unsharded: the same dumps,
dataset by dataset and attribute by attribute, bit for bit (same CPU, same code); a lost shard
reruns alone, with the merge; shard files are temporary (removed once merged)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from h5compare import h5_items
from test_workflow import TINY, copy_workflow, planned_jobs, snakemake

DATASETS = ("toy", "toy_coco")
SHARDS = {"toy": 3, "toy_coco": 2}


def config(shards: bool) -> dict:
    out = copy.deepcopy(TINY)
    out["datasets"] = {name: out["datasets"][name] for name in DATASETS}
    out["analyses"] = {"attention_distance": {"datasets": ["toy"]}, "cka": {"datasets": ["toy"]}}
    if shards:
        for name, k in SHARDS.items():
            out["datasets"][name]["shards"] = k
    return out


def dumps(models) -> list[str]:
    return [f"results/dumps/{m}/{d}.h5" for m in models for d in DATASETS]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    targets = dumps(TINY["models"])
    sharded = copy_workflow(tmp_path_factory.mktemp("sharded"), config(True))
    plain = copy_workflow(tmp_path_factory.mktemp("plain"), config(False))
    jobs = planned_jobs(sharded, *targets)
    assert jobs.get("extract_shard") == len(TINY["models"]) * sum(SHARDS.values()), jobs
    assert jobs.get("merge_shards") == len(TINY["models"]) * len(SHARDS) and "extract" not in jobs, jobs
    assert planned_jobs(plain, *targets).get("extract") == len(TINY["models"]) * len(DATASETS)
    snakemake(sharded, "--notemp", *targets)  # the shard files kept, for the retry below
    snakemake(plain, *targets)
    return sharded, plain


@pytest.mark.workflow
def test_sharded_dumps_equal_unsharded_dumps(runs) -> None:
    sharded, plain = runs
    for name in dumps(TINY["models"]):
        got, want = h5_items(sharded / name), h5_items(plain / name)
        assert sorted(got) == sorted(want), name
        for key in want:
            assert got[key] == want[key], (name, key)


@pytest.mark.workflow
def test_a_lost_shard_reruns_alone_with_the_merge(runs) -> None:
    sharded, _ = runs
    model = next(iter(TINY["models"]))
    shards = sorted((sharded / f"results/shards/{model}/toy").glob("*-of-3.h5"))
    assert [p.name for p in shards] == ["1-of-3.h5", "2-of-3.h5", "3-of-3.h5"]
    # shard 2's job failed: no dump, its siblings' files are there (temp files stay until merged)
    shards[1].unlink()
    (sharded / f"results/dumps/{model}/toy.h5").unlink()
    assert planned_jobs(sharded, *dumps(TINY["models"])) == {"extract_shard": 1, "merge_shards": 1}
    dry = snakemake(sharded, "--dry-run", *dumps(TINY["models"]))
    assert f"results/shards/{model}/toy/2-of-3.h5" in dry.stdout + dry.stderr


@pytest.mark.workflow
def test_shard_files_are_removed_once_merged(tmp_path) -> None:
    cfg = config(True)
    cfg["models"] = {"tiny_b": TINY["models"]["tiny_b"]}
    cfg["datasets"] = {"toy": cfg["datasets"]["toy"]}
    cfg["analyses"] = {}
    workdir = copy_workflow(tmp_path, cfg)
    snakemake(workdir, "results/dumps/tiny_b/toy.h5")
    assert (workdir / "results/dumps/tiny_b/toy.h5").is_file()
    assert not list((workdir / "results/shards").rglob("*.h5"))
