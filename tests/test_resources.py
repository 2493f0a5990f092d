"""Slurm requests of the rules that run a model over a dataset (vitscope.workflow.resources)."""

from __future__ import annotations

from pathlib import Path

from vitscope.workflow import resources

CONFIG = {
    "datasets": {
        "syn": {"kind": "synthetic", "synthetic": {"classes": 3, "per_class": 4}},
        "syn_default": {"kind": "synthetic"},
        "folder": {"kind": "imagefolder", "root": "x", "classes": ["a", "b"], "per_class": 7},
        "folder_all": {"kind": "imagefolder", "root": "x"},
        "coco": {"kind": "coco", "max_images": 33},
        "spair": {"kind": "spair"},
        "davis": {"kind": "davis"},
    },
    "analyses": {"spair": {"pairs_per_category": 5}},
    "extract": {"device": "auto", "num_workers": 2},
}


def test_dataset_images_from_the_config() -> None:
    images = {name: resources.dataset_images(CONFIG, name) for name in CONFIG["datasets"]}
    assert images == {"syn": 12, "syn_default": 72, "folder": 14, "folder_all": resources.DEFAULT_IMAGES,
                      "coco": 33, "spair": 2 * 18 * 5, "davis": 104 * 8}
    config = {**CONFIG, "analyses": {}}
    assert resources.dataset_images(config, "spair") == 2 * 12234


def test_dataset_images_from_the_index(tmp_path: Path) -> None:
    index = tmp_path / "index.csv"
    index.write_text("path,label\na.png,0\nb.png,1\n")
    assert resources.dataset_images(CONFIG, "folder_all", index) == 2
    assert resources.dataset_images(CONFIG, "folder_all", tmp_path / "missing.csv") == resources.DEFAULT_IMAGES


def test_gpus_runtime_and_memory() -> None:
    assert resources.model_gpus(CONFIG) == 1
    cpu = {**CONFIG, "extract": {"device": "cpu", "num_workers": 0}}
    assert resources.model_gpus(cpu) == 0 and resources.model_gpus({"extract": {"device": "cuda:1"}}) == 1
    # 10 minutes plus the images at 25/s (GPU) or 0.5/s (CPU), doubled on the second attempt
    assert resources.model_runtime(CONFIG, "folder_all", None, 1) == 10 + 7
    assert resources.model_runtime(cpu, "folder_all", None, 2) == 2 * (10 + 334)
    assert resources.model_mem_mb(CONFIG, 1) == 8000 and resources.model_mem_mb(cpu, 2) == 12000


def test_a_shard_asks_for_its_share_of_the_time_and_the_merge_for_little() -> None:
    whole = resources.model_runtime(CONFIG, "coco", None, 1)
    config = {**CONFIG, "extract": {**CONFIG["extract"], "device": "cpu"}}
    # 33 images at 0.5/s: 2 min of images in one job, 1 min in each of 3 shards (11 images)
    assert resources.model_runtime(config, "coco", None, 1) == 10 + 2
    assert resources.model_runtime(config, "coco", None, 1, shards=3) == 10 + 1
    assert resources.model_runtime(CONFIG, "coco", None, 2, shards=1) == 2 * whole
    assert resources.merge_runtime(0.0, 1) == 10
    assert resources.merge_runtime(resources.MERGE_MB_PER_S * 60 * 5, 2) == 2 * (10 + 5)
    assert resources.merge_mem_mb(1) < resources.model_mem_mb(CONFIG, 1)
