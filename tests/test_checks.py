"""What the analyses need of their datasets and models (vitscope.workflow.checks): each check,
called with a bad config, refuses it with one message naming the key (the workflow side, a dry
run that fails before any job, is tests/test_workflow.py's test_bad_config_fails_before_any_job)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from vitscope.errors import ConfigError
from vitscope.workflow import checks, configcheck

REPO = Path(__file__).resolve().parents[1]
SCHEMA = configcheck.load_schema(REPO / "workflow/schemas/config.schema.yaml")
CONFIGS = [REPO / "config.yaml", *sorted((REPO / "configs").glob("*.yaml"))]


def demo() -> dict[str, Any]:
    """The demo's config, validated (defaults filled in), as the rule files see it."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    configcheck.prepare(config, SCHEMA)
    return config


DEMO = demo()


def message(check, change) -> str:
    config = copy.deepcopy(DEMO)
    change(config)
    with pytest.raises(ConfigError) as info:
        check(config)
    text = str(info.value)
    assert len(text.splitlines()) == 1, text
    return text


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_pass(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    configcheck.prepare(config, SCHEMA)
    checks.check(config)


def test_analysis_datasets_must_exist() -> None:
    text = message(checks.check_analysis_datasets, lambda c: c["analyses"]["cls_maps"].update(datasets=["nope"]))
    assert text.startswith("analyses.cls_maps.datasets names 'nope', which is not in datasets (demo, demo_train,")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["analyses"]["saliency"].update(datasets=["demo"]),
         "analyses.saliency.datasets names 'demo' of kind 'synthetic'; saliency needs object masks"),
        (lambda c: c["analyses"]["object_clustering"].update(datasets=["demo"]),
         "analyses.object_clustering.datasets names 'demo' of kind 'synthetic'; object_clustering needs"),
        (lambda c: c["datasets"]["demo"].update(products=["tokens", "objects"]),
         "datasets.demo (kind 'synthetic') records the product 'objects', which needs instance annotations"),
        (lambda c: c["datasets"]["demo_objects"].update(products=["cls_attention"]),
         "analyses.object_clustering.datasets names 'demo_objects', whose products do not include 'objects' "
         "(add it to datasets.demo_objects.products)"),
    ],
)
def test_coco_datasets(change, expected: str) -> None:
    assert expected in message(checks.check_coco_datasets, change)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["analyses"]["knn"].update(train="nope"), "analyses.knn.train = 'nope' must name the memory-bank"),
        (lambda c: c["analyses"]["retrieval"].update(datasets=["demo"]),
         "analyses.retrieval.datasets names 'demo' of kind 'synthetic'; retrieval needs the revisited"),
        (lambda c: c["analyses"]["best_layers"]["knn"].update(k=3),
         "analyses.best_layers.knn.k = 3 is not one of analyses.knn.ks ([5, 10, 20])"),
    ],
)
def test_downstream_datasets(change, expected: str) -> None:
    assert expected in message(checks.check_downstream_datasets, change)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["analyses"]["spair"].update(datasets=["demo"]),
         "analyses.spair.datasets names 'demo' of kind 'synthetic'; keypoint transfer needs"),
        (lambda c: c["datasets"]["demo_spair"].pop("root"), "datasets.demo_spair.root is required for kind 'spair'"),
        (lambda c: c["analyses"]["cls_maps"].update(datasets=["demo_spair"]),
         "analyses.cls_maps.datasets names 'demo_spair' of kind 'spair'; SPair-71k pairs are read by"),
        (lambda c: c["analyses"]["knn"].update(train="demo_spair"),
         "analyses.knn.train names a dataset of kind 'spair'; a memory bank needs class labels"),
        (lambda c: c["analyses"]["best_layers"]["spair"].update(alpha=0.2),
         "analyses.best_layers.spair.alpha = 0.2 is not one of analyses.spair.alphas"),
        (lambda c: c["datasets"]["demo_spair"].update(split="train"),
         "datasets.demo_spair.split = 'train'; SPair-71k splits are test, val, trn"),
    ],
)
def test_spair_datasets(change, expected: str) -> None:
    assert expected in message(checks.check_spair_datasets, change)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["analyses"]["davis"].update(datasets=["demo"]),
         "analyses.davis.datasets names 'demo' of kind 'synthetic'; davis needs a dataset of kind 'davis'"),
        (lambda c: c["analyses"]["cls_maps"].update(datasets=["demo_davis"]),
         "analyses.cls_maps.datasets names 'demo_davis' of kind 'davis'; a dataset of kind 'davis' (videos) "
         "serves analyses.davis only"),
        (lambda c: c["datasets"]["demo_davis"].pop("root"), "datasets.demo_davis.root is required for kind 'davis'"),
    ],
)
def test_davis_datasets(change, expected: str) -> None:
    assert expected in message(checks.check_davis_datasets, change)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["models"]["fs"].update(checkpoint="elsewhere.safetensors"),
         "models.fs.checkpoint = 'elsewhere.safetensors', but models.fs.train makes the checkpoint: set weights: "
         "checkpoint, format: timm, checkpoint: results/checkpoints/fs.safetensors"),
        (lambda c: c["models"]["fs"]["train"].update(dataset="nope"),
         "models.fs.train.dataset = 'nope' must name a dataset in datasets"),
        (lambda c: c["models"]["fs"]["train"].update(dataset="demo_retrieval"),
         "models.fs.train.dataset names 'demo_retrieval' of kind 'revisited'; training reads class folders"),
    ],
)
def test_trained_models(change, expected: str) -> None:
    assert expected in message(checks.check_trained_models, change)


def test_check_runs_every_check() -> None:
    config = copy.deepcopy(DEMO)
    config["models"]["fs"]["train"]["dataset"] = "nope"
    with pytest.raises(ConfigError, match=re.escape("models.fs.train.dataset = 'nope'")):
        checks.check(config)


def test_trained_models_and_their_checkpoints() -> None:
    assert checks.trained_models(DEMO) == ["fs", "contrastive", "mae", "random"]
    assert checks.trained_checkpoint("fs") == "results/checkpoints/fs.safetensors"


def test_coco_products_are_those_of_the_dumps() -> None:
    from vitscope.io import dumps

    assert checks.COCO_PRODUCTS == dumps.COCO_PRODUCTS


@pytest.mark.parametrize(("change", "expected"), [
    (lambda c: c["datasets"]["demo"].update(tokens="cls"),
     "analyses.clustering reads tokens/spatial_mean of dataset 'demo', whose dump keeps only tokens/cls "
     "(datasets.demo.tokens = 'cls'"),
    (lambda c: c["datasets"]["demo_val"].update(tokens="spatial_mean"),
     "analyses.knn reads tokens/cls of dataset 'demo_val', whose dump keeps only tokens/spatial_mean"),
    (lambda c: (c["analyses"]["clustering"].update(datasets=[]), c["datasets"]["demo"].update(tokens="spatial_mean")),
     "analyses.knn reads tokens/cls of dataset 'demo'"),  # the memory bank
    (lambda c: c["datasets"]["demo_retrieval"].update(tokens="spatial_mean"),
     "analyses.retrieval reads tokens/cls of dataset 'demo_retrieval'"),
])
def test_token_storage(change, expected: str) -> None:
    assert expected in message(checks.check_token_storage, change)


def test_token_storage_kept_by_the_analyses_passes() -> None:
    config = copy.deepcopy(DEMO)
    config["datasets"]["demo_val"]["tokens"] = "cls"
    config["datasets"]["demo_val"]["token_dtype"] = "float16"
    checks.check(config)
    configcheck.prepare(config, SCHEMA)
    assert DEMO["datasets"]["demo"]["tokens"] == "both" and DEMO["datasets"]["demo"]["token_dtype"] == "float32"
