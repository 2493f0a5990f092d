"""Config look-ups of the rule files that are more than a key: paths the workflow makes, the
inputs a config reads (every missing one in one message), DAVIS sequences, the best-layer table's columns.

Every look-up of a model or dataset named by a wildcard goes through :func:`model_entry` or
:func:`dataset_entry`: a target path naming one the config lacks (``results/figures/cls_maps/vit_tiny/demo.pdf``)
fails with the configured names, never a bare ``KeyError``.

Plain functions of the config dict (and paths); rules/common.smk wraps them as input and param
functions. Nothing here imports torch: it runs at every Snakemake start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import inputs
from .checks import trained_models

Config = Mapping[str, Any]
#: called with what a job needs: raises (listing every missing input of the config) when one is missing
Require = Callable[[list], None]


def model_entry(config: Config, name: str) -> Mapping[str, Any]:
    """models.<name>; a ConfigError listing the configured models when the config has none of that name."""
    return _entry(config, "models", "model", name)


def dataset_entry(config: Config, name: str) -> Mapping[str, Any]:
    """datasets.<name>; a ConfigError listing the configured datasets when the config has none of that name."""
    return _entry(config, "datasets", "dataset", name)


#: keys of a dataset entry that say how its dumps are extracted, not which images it holds:
#: left out of the entry the index (and its readers) get, so changing them re-indexes nothing
EXTRACTION_KEYS = ("shards", "tokens", "token_dtype")


def index_entry(config: Config, name: str) -> dict[str, Any]:
    """datasets.<name> without :data:`EXTRACTION_KEYS` (the ``entry`` param of the rules that read the images)."""
    return {k: v for k, v in dataset_entry(config, name).items() if k not in EXTRACTION_KEYS}


def shards(config: Config, name: str) -> int:
    """datasets.<name>.shards: the extraction jobs of each of its dumps (1: the plain extract rule)."""
    return int(dataset_entry(config, name).get("shards", 1))


def sharded_datasets(config: Config) -> list[str]:
    """The datasets whose dumps are extracted in shards and merged (shards > 1), in config order."""
    return [name for name in config.get("datasets") or {} if shards(config, name) > 1]


def shard_files(config: Config, model: str, dataset: str) -> list[str]:
    """The shard files of the dump of ``model`` on ``dataset``: results/shards/{model}/{dataset}/{k}-of-{K}.h5."""
    k = shards(config, dataset)
    return [f"results/shards/{model}/{dataset}/{i}-of-{k}.h5" for i in range(1, k + 1)]


def _entry(config: Config, key: str, what: str, name: str) -> Mapping[str, Any]:
    entries = config.get(key) or {}
    if name not in entries:
        raise ConfigError(
            f"no {what} '{name}' in the config: the configured {key} are {', '.join(entries) or 'none'} "
            f"(a target path names the {what}, e.g. results/figures/cls_maps/<model>/<dataset>.pdf)"
        )
    return entries[name]


def generated(config: Config, path: str | Path) -> str | None:
    """The synthetic dataset folder ``path`` lies in (made by the workflow), or None."""
    parts = Path(path).parts
    if len(parts) >= 3 and parts[:2] == ("results", "synthetic"):
        name = parts[2]
        if config["datasets"].get(name, {}).get("kind") == "synthetic":  # a folder name, not a wildcard
            return f"results/synthetic/{name}"
    return None


def missing_inputs(config: Config) -> list:
    """Every checkpoint and dataset path of the config that does not exist (workflow-made ones aside)."""
    return inputs.missing_inputs(
        config, generated=lambda path: generated(config, path) is not None, trained=frozenset(trained_models(config))
    )


def missing_message(missing: list, cwd: str | Path) -> str:
    return inputs.missing_message(missing, cwd)


def checkpoint_file(config: Config, alias: str) -> str | None:
    """The checkpoint file of models.<alias> (zoo and flat entries alike), or None."""
    return inputs.checkpoint_of(alias, model_entry(config, alias))


def checkpoint_needs(config: Config, alias: str) -> list:
    return [inputs.checkpoint_need(alias, model_entry(config, alias))]


def dataset_needs(config: Config, dataset: str) -> list:
    return inputs.dataset_paths(dataset, dataset_entry(config, dataset))


def gnd_file(config: Config, dataset: str) -> str:
    """The ground-truth pickle of a revisited dataset: {root}/{name}/gnd_{name}.pkl."""
    entry = dataset_entry(config, dataset)
    return f"{entry['root']}/{entry['name']}/gnd_{entry['name']}.pkl"


def index_inputs(config: Config, dataset: str) -> list[str]:
    """What the index of a dataset is made from (made by the workflow, or re-indexed when it
    changes): the synthetic folder (kind synthetic, or a folder inside it), the annotation
    file (kind coco) or the ground-truth pickle (kind revisited)."""
    entry = dataset_entry(config, dataset)
    if entry["kind"] == "synthetic":
        return [f"results/synthetic/{dataset}"]
    if entry["kind"] == "imagefolder":
        folder = generated(config, entry.get("root", ""))
        return [folder] if folder else []
    if entry["kind"] == "revisited":
        return gnd_input(config, dataset)
    return coco_annotations_input(config, dataset)


def coco_annotations_input(config: Config, dataset: str) -> list[str]:
    """The annotation file of a coco dataset, or the synthetic folder that holds it
    (a file inside a directory() output cannot be an input itself)."""
    entry = dataset_entry(config, dataset)
    if entry["kind"] != "coco":
        return []
    return [generated(config, entry["annotations"]) or entry["annotations"]]


def gnd_input(config: Config, dataset: str) -> list[str]:
    """The gnd pickle of a revisited dataset, or the synthetic folder that holds it."""
    entry = dataset_entry(config, dataset)
    if entry["kind"] != "revisited":
        return []
    return [generated(config, entry["root"]) or gnd_file(config, dataset)]


def davis_sequences(config: Config, dataset: str, require: Require) -> list[str]:
    """The sequences of a davis dataset, known when the DAG is built (no checkpoint needed):
    datasets.<name>.sequences when given, else the generator's synthetic.davis_sequences when the
    workflow makes the data (the demo), else {root}/ImageSets/2017/{split}.txt. Called from input
    functions only, so a missing DAVIS copy fails the DAVIS jobs, not every run."""
    entry = dataset_entry(config, dataset)
    root = entry["root"]
    folder = generated(config, root)
    if folder:
        spec = dataset_entry(config, Path(folder).name).get("synthetic", {})
        if Path(root) != Path(folder, "davis") or not spec.get("davis_sequences"):
            raise ConfigError(
                f"datasets.{dataset}.root = '{root}' lies in a generated dataset; the generator writes videos to "
                f"'{folder}/davis' when its synthetic.davis_sequences lists their names"
            )
        available = list(spec["davis_sequences"])
    else:
        path = Path(root) / "ImageSets" / "2017" / f"{entry.get('split', 'val')}.txt"
        if not path.is_file():
            if entry.get("sequences"):
                return list(entry["sequences"])
            require(dataset_needs(config, dataset))
            raise ConfigError(
                f"datasets.{dataset}: '{path}' does not exist (the DAVIS layout under root = '{root}'), "
                f"so the sequences are unknown; fix root or list datasets.{dataset}.sequences"
            )
        available = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    chosen = list(entry.get("sequences") or available)
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise ConfigError(f"datasets.{dataset}.sequences names {', '.join(unknown)}, not in {root}")
    return chosen


def davis_sequence_input(config: Config, dataset: str, sequence: str) -> list[str]:
    """The sequence's frame and annotation folders, or the generated folder that holds them."""
    entry = dataset_entry(config, dataset)
    folder = generated(config, entry["root"])
    if folder:
        return [folder]
    res = entry.get("resolution", "480p")
    return [f"{entry['root']}/{part}/{res}/{sequence}" for part in ("JPEGImages", "Annotations")]


def best_layer_tasks(config: Config) -> list[dict[str, Any]]:
    """The columns of the best-layer table: one per k-NN query dataset, retrieval, SPair and DAVIS dataset.

    Each is {label, files (every model's tidy result CSV), select (column -> value), scale,
    digits, unit, legend}: every score in % (the fraction x 100, 2 decimals); legend explains
    the label's abbreviations. A new downstream task adds its entries here (vitscope's tasks
    best-layer Task).
    """
    settings = config["analyses"]["best_layers"]
    models = list(config["models"])
    analyses = config["analyses"]

    def column(task: str, dataset: str, label: str, select: dict[str, Any], legend: tuple[str, ...] = ()) -> dict:
        files = [f"results/{task}/{model}/{dataset}.csv" for model in models]
        return {"label": label, "files": files, "select": select, "scale": 100.0, "digits": 2, "unit": "%",
                "legend": legend}

    tasks = []
    knn = settings["knn"]
    for dataset in analyses.get("knn", {}).get("datasets", []):
        label = f"{dataset} k-NN {knn['metric'].replace('top', 'top-')}, k={knn['k']}"
        tasks.append(column("knn", dataset, label, {"metric": knn["metric"], "k": knn["k"]}))
    ret = settings["retrieval"]
    letter = ret["protocol"][0].upper()
    for dataset in analyses.get("retrieval", {}).get("datasets", []):
        label = f"{dataset} ({letter}) {ret['metric']}"
        legend = (f"({letter}): the {ret['protocol'].capitalize()} protocol of revisited Oxford and Paris "
                  "(E = Easy, M = Medium, H = Hard).",)
        tasks.append(column("retrieval", dataset, label, {"metric": ret["metric"], "protocol": ret["protocol"]},
                            legend))
    alpha = settings["spair"]["alpha"]
    for dataset in analyses.get("spair", {}).get("datasets", []):
        select = {"metric": "PCK", "alpha": float(alpha)}
        legend = (f"PCK@{alpha}: keypoints within {alpha} x the target box's longer side.",)
        tasks.append(column("spair", dataset, f"{dataset} PCK@{alpha}", select, legend))
    dav = settings["davis"]
    for dataset in analyses.get("davis", {}).get("datasets", []):
        label = f"{dataset} {dav['measure']}"
        legend = ("J&F: the mean of region similarity J and boundary accuracy F.",) if dav["measure"] == "J&F" else ()
        tasks.append(column("davis", dataset, label, {"measure": dav["measure"], "metric": "mean"}, legend))
    return tasks


def products(config: Config, dataset: str) -> list[str]:
    """The dump products of ``dataset``: datasets.<name>.products, else extract.products."""
    return dataset_entry(config, dataset).get("products", config["extract"]["products"])


def object_source(config: Config, dataset: str) -> dict[str, str]:
    """Root and annotation file of a coco dataset whose dump records objects, else {}."""
    entry = dataset_entry(config, dataset)
    if "objects" not in products(config, dataset):
        return {}
    return {"root": entry["root"], "annotations": entry["annotations"]}


def object_annotations_input(config: Config, dataset: str) -> list[str]:
    """The coco annotation file (or the synthetic folder holding it) when the dump records objects."""
    return coco_annotations_input(config, dataset) if "objects" in products(config, dataset) else []


def revisited_entry(config: Config, dataset: str) -> dict[str, Any]:
    entry = dataset_entry(config, dataset)
    return {"root": entry["root"], "name": entry["name"], "crop_queries": entry.get("crop_queries", True)}


def spair_entry(config: Config, dataset: str) -> dict[str, str]:
    entry = dataset_entry(config, dataset)
    return {"root": entry["root"], "split": entry.get("split", "test")}


def spair_input(config: Config, dataset: str, require: Require) -> list[str]:
    """The pair annotations of a spair dataset, or the synthetic folder that holds them."""
    entry = spair_entry(config, dataset)
    folder = generated(config, entry["root"])
    if not folder:
        require(dataset_needs(config, dataset))
    return [folder or f"{entry['root']}/PairAnnotation/{entry['split']}"]


def davis_entry(config: Config, dataset: str) -> dict[str, str]:
    entry = dataset_entry(config, dataset)
    return {"root": entry["root"], "resolution": entry.get("resolution", "480p")}


def davis_options(config: Config) -> dict[str, Any]:
    """The analyses.davis settings a sequence's job uses (not its dataset list)."""
    return {key: value for key, value in config["analyses"]["davis"].items() if key != "datasets"}


def offset_thresholds(config: Config) -> dict[str, Any]:
    """The offset-local head detector's thresholds (the heads module's Thresholds) from the config."""
    settings = config["analyses"]["offset_heads"]
    return {key: settings[key] for key in ("radius", "min_mass", "min_shift", "min_lift")}


def train_index(config: Config, model: str) -> list[str]:
    """The index of a trained model's images (none for objective random, which reads no data)."""
    train = model_entry(config, model)["train"]
    return [] if train["objective"] == "random" else [f"results/index/{train['dataset']}.csv"]
