"""What the analyses need of the datasets and models they name: checks of a validated config.

rules/common.smk runs :func:`check` once, after :func:`vitscope.workflow.configcheck.prepare`
(schema, defaults, names); each function raises :class:`vitscope.errors.ConfigError` with one
message naming the config key (the rule file turns it into a WorkflowError, same text).
tests/test_checks.py calls each with a bad config and reads the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

Config = Mapping[str, Any]

#: dump products that need a dataset of kind coco (vitscope's dumps.COCO_PRODUCTS; tests/test_checks.py)
COCO_PRODUCTS = frozenset({"objects"})
#: analyses that read object masks, i.e. a dataset of kind coco
COCO_ANALYSES = ("saliency", "object_clustering")


def _datasets(config: Config) -> str:
    return ", ".join(config["datasets"])


def _products(config: Config, dataset: str) -> list[str]:
    return config["datasets"][dataset].get("products", config["extract"]["products"])


def check(config: Config) -> None:
    """Every check below, in order."""
    check_analysis_datasets(config)
    check_coco_datasets(config)
    check_downstream_datasets(config)
    check_token_storage(config)
    check_spair_datasets(config)
    check_davis_datasets(config)
    check_trained_models(config)


def check_analysis_datasets(config: Config) -> None:
    """Every analysis runs on datasets of the config."""
    for name, analysis in config["analyses"].items():
        for dataset in analysis.get("datasets", []):
            if dataset not in config["datasets"]:
                raise ConfigError(
                    f"analyses.{name}.datasets names '{dataset}', which is not in datasets ({_datasets(config)})"
                )


def check_coco_datasets(config: Config) -> None:
    """Analyses and products that need object masks run on datasets of kind coco only."""
    for analysis in COCO_ANALYSES:
        for dataset in config["analyses"].get(analysis, {}).get("datasets", []):
            kind = config["datasets"][dataset]["kind"]
            if kind != "coco":
                raise ConfigError(
                    f"analyses.{analysis}.datasets names '{dataset}' of kind '{kind}'; {analysis} needs "
                    "object masks, i.e. a dataset of kind 'coco' (root + annotations)"
                )
    for dataset, entry in config["datasets"].items():
        for product in sorted(COCO_PRODUCTS & set(_products(config, dataset))):
            if entry["kind"] != "coco":
                raise ConfigError(
                    f"datasets.{dataset} (kind '{entry['kind']}') records the product '{product}', which needs "
                    "instance annotations, i.e. a dataset of kind 'coco'"
                )
    for dataset in config["analyses"].get("object_clustering", {}).get("datasets", []):
        if "objects" not in _products(config, dataset):
            raise ConfigError(
                f"analyses.object_clustering.datasets names '{dataset}', whose products do not include "
                f"'objects' (add it to datasets.{dataset}.products)"
            )


def check_downstream_datasets(config: Config) -> None:
    """k-NN's memory bank is a dataset of the config, retrieval runs on revisited datasets, and the
    best-layer table's k is one that k-NN computes."""
    knn = config["analyses"].get("knn", {})
    if knn.get("datasets") and knn.get("train") not in config["datasets"]:
        raise ConfigError(
            f"analyses.knn.train = {knn.get('train')!r} must name the memory-bank dataset in datasets "
            f"({_datasets(config)})"
        )
    for dataset in config["analyses"].get("retrieval", {}).get("datasets", []):
        kind = config["datasets"][dataset]["kind"]
        if kind != "revisited":
            raise ConfigError(
                f"analyses.retrieval.datasets names '{dataset}' of kind '{kind}'; retrieval needs the revisited "
                "Oxford/Paris ground truth, i.e. a dataset of kind 'revisited' (root + name)"
            )
    best = config["analyses"].get("best_layers", {})
    if knn.get("datasets") and best.get("knn", {}).get("k", 20) not in knn.get("ks", [10, 20, 100, 200]):
        raise ConfigError(
            f"analyses.best_layers.knn.k = {best['knn']['k']} is not one of analyses.knn.ks ({knn.get('ks')})"
        )


#: the token kinds each dump-reading analysis needs (datasets.<name>.tokens keeps cls, spatial_mean or both)
TOKEN_NEEDS = {"knn": ("cls",), "retrieval": ("cls",), "clustering": ("cls", "spatial_mean")}


def check_token_storage(config: Config) -> None:
    """Every dataset an analysis reads tokens from keeps the token kinds it needs (datasets.<name>.tokens)."""
    for analysis, needs in TOKEN_NEEDS.items():
        entry = config["analyses"].get(analysis, {})
        datasets = list(entry.get("datasets", []))
        if analysis == "knn" and datasets and entry.get("train") in config["datasets"]:
            datasets.append(entry["train"])
        for dataset in datasets:
            kept = config["datasets"][dataset].get("tokens", "both")
            for kind in needs:
                if kept not in (kind, "both"):
                    raise ConfigError(
                        f"analyses.{analysis} reads tokens/{kind} of dataset '{dataset}', whose dump keeps only "
                        f"tokens/{kept} (datasets.{dataset}.tokens = {kept!r}; set it to {kind!r} or 'both')"
                    )


def check_spair_datasets(config: Config) -> None:
    """SPair-71k datasets (kind spair) are read by the spair analysis only, which reads nothing else."""
    spair = config["analyses"].get("spair", {})
    for dataset in spair.get("datasets", []):
        entry = config["datasets"][dataset]
        if entry["kind"] != "spair":
            raise ConfigError(
                f"analyses.spair.datasets names '{dataset}' of kind '{entry['kind']}'; keypoint transfer needs "
                "SPair-71k pair annotations, i.e. a dataset of kind 'spair' (root + split)"
            )
        if "root" not in entry:
            raise ConfigError(f"datasets.{dataset}.root is required for kind 'spair' (the SPair-71k folder)")
    for name, analysis in config["analyses"].items():
        for dataset in analysis.get("datasets", []) if name != "spair" else []:
            if config["datasets"][dataset]["kind"] == "spair":
                raise ConfigError(
                    f"analyses.{name}.datasets names '{dataset}' of kind 'spair'; SPair-71k pairs are read by "
                    "the spair analysis only (they are never indexed or dumped)"
                )
    train = config["analyses"].get("knn", {}).get("train")
    if train in config["datasets"] and config["datasets"][train]["kind"] == "spair":
        raise ConfigError("analyses.knn.train names a dataset of kind 'spair'; a memory bank needs class labels")
    alpha = config["analyses"].get("best_layers", {}).get("spair", {}).get("alpha", 0.1)
    if spair.get("datasets") and alpha not in spair.get("alphas", [0.1, 0.05, 0.01]):
        raise ConfigError(
            f"analyses.best_layers.spair.alpha = {alpha} is not one of analyses.spair.alphas ({spair.get('alphas')})"
        )
    for dataset, entry in config["datasets"].items():
        if entry["kind"] == "spair" and entry.get("split", "test") not in ("test", "val", "trn"):
            raise ConfigError(f"datasets.{dataset}.split = {entry['split']!r}; SPair-71k splits are test, val, trn")


def check_davis_datasets(config: Config) -> None:
    """Datasets of kind davis (videos) serve analyses.davis only, and it needs them."""
    for name, analysis in config["analyses"].items():
        for dataset in analysis.get("datasets", []):
            kind = config["datasets"][dataset]["kind"]
            if (name == "davis") != (kind == "davis"):
                raise ConfigError(
                    f"analyses.{name}.datasets names '{dataset}' of kind '{kind}'; "
                    + ("davis needs a dataset of kind 'davis' (the DAVIS layout under root)" if name == "davis"
                       else "a dataset of kind 'davis' (videos) serves analyses.davis only")
                )
    for dataset, entry in config["datasets"].items():
        if entry["kind"] == "davis" and "root" not in entry:
            raise ConfigError(f"datasets.{dataset}.root is required for kind 'davis'")


def trained_checkpoint(alias: str) -> str:
    """Where the train rule writes the checkpoint of models.<alias>."""
    return f"results/checkpoints/{alias}.safetensors"


def trained_models(config: Config) -> list[str]:
    """The models with a train entry (the workflow trains their checkpoints), in config order."""
    return [alias for alias, entry in config["models"].items() if "train" in entry]


def check_trained_models(config: Config) -> None:
    """A model with a train entry loads the train rule's output like any checkpoint: say so explicitly."""
    for alias in trained_models(config):
        entry, key = config["models"][alias], f"models.{alias}"
        expected = {"weights": "checkpoint", "format": "timm", "checkpoint": trained_checkpoint(alias)}
        for name, value in expected.items():
            if entry.get(name) != value:
                raise ConfigError(
                    f"{key}.{name} = {entry.get(name)!r}, but {key}.train makes the checkpoint: set "
                    + ", ".join(f"{k}: {v}" for k, v in expected.items())
                )
        train = entry["train"]
        if train["objective"] == "random":
            continue
        dataset = train.get("dataset")
        if dataset not in config["datasets"]:
            raise ConfigError(
                f"{key}.train.dataset = {dataset!r} must name a dataset in datasets ({_datasets(config)})"
            )
        kind = config["datasets"][dataset]["kind"]
        if kind not in ("synthetic", "imagefolder"):
            raise ConfigError(
                f"{key}.train.dataset names '{dataset}' of kind '{kind}'; training reads class folders "
                "(kind synthetic or imagefolder)"
            )
