"""Resource requests of the rules that run a model over a dataset (extract, extract_shard, spair,
davis_sequence), and of the merge of shards (merge_shards).

Used by the Slurm profile (profiles/slurm); a local run only counts ``gpu`` (profiles/default).
Such a rule declares ``resources: gpu=model_gpus, mem_mb=model_mem_mb, runtime=model_runtime``
(thin wrappers in rules/common.smk); every other rule gets the profile's default-resources.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import lookups

Config = Mapping[str, Any]

#: Conservative throughput of a full extraction for wall-time requests, images/s
#: (docs/performance.md: ViT-B/16 ~800/s on an H100/H200, ViT-S/16 ~10/s on two
#: CPU threads; ViT-L/14 costs about 6x B/16).
IMAGES_PER_S = {"gpu": 25.0, "cpu": 0.5}
#: Images assumed for a dataset whose size is not known before it is indexed.
DEFAULT_IMAGES = 10000


def dataset_images(config: Config, dataset: str, index: str | Path | None = None) -> int:
    """Images in ``dataset``: rows of its index CSV when it exists, else what the config tells, else a guess."""
    if index and Path(index).is_file():
        with open(index, newline="") as handle:
            return max(0, sum(1 for _ in csv.reader(handle)) - 1)
    entry = lookups.dataset_entry(config, dataset)
    if entry["kind"] == "synthetic":
        spec = entry.get("synthetic", {})
        return spec.get("classes", 6) * spec.get("per_class", 12)
    if entry["kind"] == "imagefolder" and "classes" in entry and "per_class" in entry:
        return len(entry["classes"]) * entry["per_class"]
    if entry["kind"] == "coco" and "max_images" in entry:
        return entry["max_images"]
    if entry["kind"] == "spair":
        # two images a pair: analyses.spair.pairs_per_category of 18 categories, or all 12,234 test pairs
        per_category = config["analyses"].get("spair", {}).get("pairs_per_category")
        return 2 * (18 * per_category if per_category else 12234)
    if entry["kind"] == "davis":
        # one job per sequence: at most 104 frames (DAVIS-2017 val), each 8 tiled windows at 448 x 784
        return 104 * 8
    return DEFAULT_IMAGES


def model_gpus(config: Config) -> int:
    """1 when extract.device may use CUDA (auto, cuda, cuda:N), else 0."""
    return 1 if config["extract"]["device"].startswith(("auto", "cuda")) else 0


def model_runtime(config: Config, dataset: str, index: str | Path | None, attempt: int, shards: int = 1) -> int:
    """Wall time in minutes of a pass over the dataset (over one of its ``shards``: datasets.<name>.shards):
    10 + images at IMAGES_PER_S, doubled per retry."""
    rate = IMAGES_PER_S["gpu" if model_gpus(config) else "cpu"]
    images = math.ceil(dataset_images(config, dataset, index) / max(1, shards))
    return (10 + math.ceil(images / rate / 60)) * attempt


#: Conservative rate of the merge of shard files into a dump, MB of shards per second
#: (docs/performance.md#sharded-extraction measured it on this project's 2-core machine)
MERGE_MB_PER_S = 20.0


def merge_runtime(size_mb: float, attempt: int) -> int:
    """Wall time in minutes of the merge of shard files of ``size_mb`` MB: 10 + MERGE_MB_PER_S, doubled per retry."""
    return (10 + math.ceil(size_mb / MERGE_MB_PER_S / 60)) * attempt


def merge_mem_mb(attempt: int) -> int:
    """Host memory in MB of a merge: rows are copied 256 at a time, the sums and exemplar maps held whole."""
    return 4000 * attempt


def model_mem_mb(config: Config, attempt: int) -> int:
    """Host memory in MB: the flat extraction RSS (docs/performance.md) plus 1 GB per loader worker."""
    return (6000 + 1000 * config["extract"]["num_workers"]) * attempt
