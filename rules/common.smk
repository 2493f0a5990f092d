# Helpers shared by the rule files (config look-ups, code versions).

import csv
import functools
import hashlib
import math
import os
import re
from pathlib import Path

PACKAGE = Path(workflow.basedir) / "src" / "vitscope"

# Torch-free package modules (the Snakefile put the workflow's own src/ first on sys.path).
from vitscope.io import fingerprint  # noqa: E402
from vitscope.workflow import inputs  # noqa: E402


MODELS = list(config["models"])
CLUSTER_METRICS = ["purity", "nmi", "ari"]
DATASETS = list(config["datasets"])


def _check_analysis_datasets():
    for name, analysis in config["analyses"].items():
        for dataset in analysis.get("datasets", []):
            if dataset not in config["datasets"]:
                raise WorkflowError(
                    f"analyses.{name}.datasets names '{dataset}', which is not in datasets "
                    f"({', '.join(DATASETS)})"
                )


def _check_coco_datasets():
    """Analyses and products that need object masks run on datasets of kind coco only."""
    for analysis in ("saliency", "object_clustering"):
        for dataset in config["analyses"].get(analysis, {}).get("datasets", []):
            kind = config["datasets"][dataset]["kind"]
            if kind != "coco":
                raise WorkflowError(
                    f"analyses.{analysis}.datasets names '{dataset}' of kind '{kind}'; {analysis} needs "
                    "object masks, i.e. a dataset of kind 'coco' (root + annotations)"
                )
    for dataset, entry in config["datasets"].items():
        if "objects" in entry.get("products", config["extract"]["products"]) and entry["kind"] != "coco":
            raise WorkflowError(
                f"datasets.{dataset} (kind '{entry['kind']}') records the product 'objects', which needs "
                "instance annotations, i.e. a dataset of kind 'coco'"
            )
    for dataset in config["analyses"].get("object_clustering", {}).get("datasets", []):
        if "objects" not in config["datasets"][dataset].get("products", config["extract"]["products"]):
            raise WorkflowError(
                f"analyses.object_clustering.datasets names '{dataset}', whose products do not include "
                f"'objects' (add it to datasets.{dataset}.products)"
            )


def _check_downstream_datasets():
    knn = config["analyses"].get("knn", {})
    if knn.get("datasets") and knn.get("train") not in config["datasets"]:
        raise WorkflowError(
            f"analyses.knn.train = {knn.get('train')!r} must name the memory-bank dataset in datasets "
            f"({', '.join(DATASETS)})"
        )
    for dataset in config["analyses"].get("retrieval", {}).get("datasets", []):
        kind = config["datasets"][dataset]["kind"]
        if kind != "revisited":
            raise WorkflowError(
                f"analyses.retrieval.datasets names '{dataset}' of kind '{kind}'; retrieval needs the revisited "
                "Oxford/Paris ground truth, i.e. a dataset of kind 'revisited' (root + name)"
            )
    best = config["analyses"].get("best_layers", {})
    if knn.get("datasets") and best.get("knn", {}).get("k", 20) not in knn.get("ks", [10, 20, 100, 200]):
        raise WorkflowError(
            f"analyses.best_layers.knn.k = {best['knn']['k']} is not one of analyses.knn.ks ({knn.get('ks')})"
        )


def _check_spair_datasets():
    """SPair-71k datasets (kind spair) are read by the spair analysis only, which reads nothing else."""
    spair = config["analyses"].get("spair", {})
    for dataset in spair.get("datasets", []):
        entry = config["datasets"][dataset]
        if entry["kind"] != "spair":
            raise WorkflowError(
                f"analyses.spair.datasets names '{dataset}' of kind '{entry['kind']}'; keypoint transfer needs "
                "SPair-71k pair annotations, i.e. a dataset of kind 'spair' (root + split)"
            )
        if "root" not in entry:
            raise WorkflowError(f"datasets.{dataset}.root is required for kind 'spair' (the SPair-71k folder)")
    for name, analysis in config["analyses"].items():
        for dataset in analysis.get("datasets", []) if name != "spair" else []:
            if config["datasets"][dataset]["kind"] == "spair":
                raise WorkflowError(
                    f"analyses.{name}.datasets names '{dataset}' of kind 'spair'; SPair-71k pairs are read by "
                    "the spair analysis only (they are never indexed or dumped)"
                )
    if config["analyses"].get("knn", {}).get("train") in config["datasets"]:
        if config["datasets"][config["analyses"]["knn"]["train"]]["kind"] == "spair":
            raise WorkflowError("analyses.knn.train names a dataset of kind 'spair'; a memory bank needs class labels")
    alpha = config["analyses"].get("best_layers", {}).get("spair", {}).get("alpha", 0.1)
    if spair.get("datasets") and alpha not in spair.get("alphas", [0.1, 0.05, 0.01]):
        raise WorkflowError(f"analyses.best_layers.spair.alpha = {alpha} is not one of analyses.spair.alphas "
                            f"({spair.get('alphas')})")
    for dataset, entry in config["datasets"].items():
        if entry["kind"] == "spair" and entry.get("split", "test") not in ("test", "val", "trn"):
            raise WorkflowError(f"datasets.{dataset}.split = {entry['split']!r}; SPair-71k splits are test, val, trn")


def _check_davis_datasets():
    """Datasets of kind davis (videos) serve analyses.davis only, and it needs them."""
    for name, analysis in config["analyses"].items():
        for dataset in analysis.get("datasets", []):
            kind = config["datasets"][dataset]["kind"]
            if (name == "davis") != (kind == "davis"):
                raise WorkflowError(
                    f"analyses.{name}.datasets names '{dataset}' of kind '{kind}'; "
                    + ("davis needs a dataset of kind 'davis' (the DAVIS layout under root)" if name == "davis"
                       else "a dataset of kind 'davis' (videos) serves analyses.davis only")
                )
    for dataset, entry in config["datasets"].items():
        if entry["kind"] == "davis" and "root" not in entry:
            raise WorkflowError(f"datasets.{dataset}.root is required for kind 'davis'")
TRAINED = [alias for alias, entry in config["models"].items() if "train" in entry]


def trained_checkpoint(alias):
    """Where the train rule writes the checkpoint of models.<alias>."""
    return f"results/checkpoints/{alias}.safetensors"


def _check_trained_models():
    """A model with a train entry loads the train rule's output like any checkpoint: say so explicitly."""
    for alias in TRAINED:
        entry, key = config["models"][alias], f"models.{alias}"
        expected = {"weights": "checkpoint", "format": "timm", "checkpoint": trained_checkpoint(alias)}
        for name, value in expected.items():
            if entry.get(name) != value:
                raise WorkflowError(
                    f"{key}.{name} = {entry.get(name)!r}, but {key}.train makes the checkpoint: set "
                    + ", ".join(f"{k}: {v}" for k, v in expected.items())
                )
        train = entry["train"]
        if train["objective"] == "random":
            continue
        dataset = train.get("dataset")
        if dataset not in config["datasets"]:
            raise WorkflowError(
                f"{key}.train.dataset = {dataset!r} must name a dataset in datasets ({', '.join(DATASETS)})"
            )
        kind = config["datasets"][dataset]["kind"]
        if kind not in ("synthetic", "imagefolder"):
            raise WorkflowError(
                f"{key}.train.dataset names '{dataset}' of kind '{kind}'; training reads class folders "
                "(kind synthetic or imagefolder)"
            )


_check_analysis_datasets()
_check_coco_datasets()
_check_downstream_datasets()
_check_spair_datasets()
_check_davis_datasets()
_check_trained_models()


#: package modules that shape only messages and log files, never an output: not hashed
CODE_VERSION_IGNORED = ("errors.py", "logs.py")


def _package_file(parts):
    """src/vitscope/<parts>.py, or the package's __init__.py when <parts> is a subpackage (or None)."""
    path = PACKAGE.joinpath(*parts)
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


#: an import statement at the start of a line (a parenthesised name list may span lines)
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)|import[ \t]+([^\n]+))", re.M)


@functools.cache  # every rule's code_version walks the same files: read each once
def _package_imports(file):
    """The package files that ``file`` imports (anywhere in it: function-level imports count).

    A regular expression over the source, not ``ast``: parsing every module took ~1 s
    of each Snakemake start. A line in a docstring that looks like an import can only
    add a file to the hash, never drop one.
    """
    here = file.relative_to(PACKAGE).with_suffix("").parts
    package = list(here[:-1])
    candidates = []
    for source, names, plain in _IMPORT.findall(file.read_text()):
        if plain:
            candidates += [n.split()[0].split(".")[1:] for n in plain.split(",") if n.split()[0].split(".")[0] == "vitscope"]
            continue
        level = len(source) - len(source.lstrip("."))
        dotted = source[level:]
        if level:
            base = package[: len(package) - (level - 1)] + (dotted.split(".") if dotted else [])
        elif dotted.split(".")[0] == "vitscope":
            base = dotted.split(".")[1:]
        else:
            continue
        names = re.sub(r"#[^\n]*", "", names).strip("()").replace("\\", " ")  # comments, continuations
        listed = [n.split()[0] for n in names.split(",") if n.split()]
        candidates += [base] + [base + [n] for n in listed if n.isidentifier()]
    return {f for f in map(_package_file, candidates) if f is not None}


def code_version(*modules):
    """Hash of the package modules a rule uses, so editing them reruns the rule.

    Each name is a module of src/vitscope, as a path without .py ("attention/metrics",
    "tasks/knn"), or a whole subpackage ("models/formats"); every module they import,
    directly or not, counts too (found in their source, so a new import is never
    forgotten), and so does the package's __init__ (its version). errors.py and
    logs.py do not: they shape messages, never outputs. tests/test_code_version.py
    checks that every rule names at least the modules its script imports.
    """
    todo = [PACKAGE / "__init__.py"]
    for name in modules:
        path = PACKAGE / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
        if not files or not files[0].is_file():
            raise WorkflowError(f"code_version: no module vitscope.{name} in {PACKAGE}")
        todo += files
    seen = set()
    while todo:
        file = todo.pop()
        if file in seen or file.name in CODE_VERSION_IGNORED and file.parent == PACKAGE:
            continue
        seen.add(file)
        todo += _package_imports(file)
    digest = hashlib.sha256()
    for file in sorted(seen):
        digest.update(_file_digest(file))
    return digest.hexdigest()[:16]


@functools.cache
def _file_digest(file):
    """SHA-256 of a module's name and source (each file read once per Snakemake start)."""
    digest = hashlib.sha256(file.relative_to(PACKAGE).as_posix().encode())
    digest.update(file.read_bytes())
    return digest.digest()


def analysis_datasets(name):
    return config["analyses"].get(name, {}).get("datasets", [])


def model_entry(wildcards):
    return config["models"][wildcards.model]


def dataset_entry(wildcards):
    return config["datasets"][wildcards.dataset]


def products(wildcards):
    entry = config["datasets"][wildcards.dataset]
    return entry.get("products", config["extract"]["products"])


@functools.cache
def missing_inputs():
    """Every checkpoint and dataset path of the config that does not exist (workflow-made ones aside)."""
    return inputs.missing_inputs(
        config, generated=lambda path: _generated(path) is not None, trained=frozenset(TRAINED)
    )


def require(needs):
    """Stop planning, listing every missing input of the config, when one of ``needs`` is missing.

    Called from the input and param functions of the jobs that read a model or a
    dataset, so a target that needs none of the missing files is not blocked, and a
    run that does is told everything missing at once (not one file per attempt).
    """
    paths = {need.path for need in needs}
    if any(need.path in paths for need in missing_inputs()):
        raise WorkflowError(inputs.missing_message(missing_inputs(), Path.cwd()))


def checkpoint_file(alias):
    """The checkpoint file of models.<alias> (zoo and flat entries alike), or None."""
    return inputs.checkpoint_of(alias, config["models"][alias])


def checkpoint_input(wildcards):
    """The model's checkpoint file, an input of every job that loads the model.

    A file no rule makes (anything but a train rule's output) must exist when a
    job needs it: the error names the config key, the file and where the release
    is published, with every other missing input of the config.
    """
    alias = wildcards.model
    path = checkpoint_file(alias)
    if path is None:
        return []
    if alias not in TRAINED:
        require([inputs.checkpoint_need(alias, config["models"][alias])])
    return [path]


def checkpoint_stamp(wildcards):
    """Size and modification time of the model's checkpoint, so a replaced file re-extracts even
    when it is older than the dump (a copy that kept its date); '' for trained or hub weights."""
    alias = wildcards.model
    path = checkpoint_file(alias)
    if path is None or alias in TRAINED:
        return ""
    require([inputs.checkpoint_need(alias, config["models"][alias])])
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def fingerprint_mode(dataset):
    return config["datasets"][dataset].get("fingerprint", "stat")


def dataset_fingerprint(wildcards):
    return _dataset_fingerprint(wildcards.dataset)


@functools.cache  # one pass over the folders per planning process
def _dataset_fingerprint(name):
    """Fingerprint of every file the dataset's index is made from (vitscope.io.fingerprint), so adding,
    removing or replacing an image, or editing a list or annotation file, re-indexes; '' for a dataset
    the workflow generates (its folder is an input)."""
    entry = config["datasets"][name]
    if entry["kind"] in ("synthetic", "spair", "davis") or _generated(entry.get("root", "")):
        return ""
    require(inputs.dataset_paths(name, entry))
    mode = fingerprint_mode(name)
    kind, root = entry["kind"], entry.get("root")
    if kind == "imagefolder":
        classes = entry.get("classes") or sorted(p.name for p in os.scandir(root) if p.is_dir())
        return fingerprint.folders([str(Path(root) / c) for c in sorted(classes)], mode)
    if kind == "imagelist":
        base = Path(root) if root else Path(entry["list"]).parent
        names = [line.strip() for line in Path(entry["list"]).read_text(errors="surrogateescape").splitlines()]
        listed = [str(base / n) for n in names if n and not n.startswith("#")]
        return fingerprint.digest([fingerprint.folders([entry["list"]], mode), fingerprint.files(
            [p for p in listed if os.path.isfile(p)], mode)])
    if kind == "coco":
        return fingerprint.folders([entry["annotations"], root], mode, recursive=True)
    if kind == "revisited":
        base = Path(root) / entry["name"]
        return fingerprint.folders([str(base / f"gnd_{entry['name']}.pkl"), str(base / "jpg")], mode)
    return ""


def indexed_images(wildcards):
    """Fingerprint of the images the dataset's index lists (read when the index exists, else '' until
    the index checkpoint has run): a replaced image re-extracts, an image added outside the index does not."""
    return _indexed_images(wildcards.dataset)


def _indexed_images(dataset):
    entry = config["datasets"][dataset]
    index = Path(f"results/index/{dataset}.csv")
    if entry["kind"] == "synthetic" or _generated(entry.get("root", "")) or not index.is_file():
        return ""
    st = index.stat()  # the index checkpoint may rewrite it while this process plans
    return _images_of_index(dataset, st.st_size, st.st_mtime_ns)


@functools.cache  # every model's dump of a dataset asks for the same images
def _images_of_index(dataset, size, mtime_ns):
    _dataset_fingerprint(dataset)  # the folder scans, whose stamps fingerprint.files reuses
    with open(f"results/index/{dataset}.csv", newline="", encoding="utf-8") as handle:
        paths = [row[0] for row in csv.reader(handle)][1:]
    return fingerprint.files(paths, fingerprint_mode(dataset))


def annotation_stamp(wildcards):
    """Fingerprint of the annotation file a job reads beside its dump (coco annotations, revisited
    ground truth), so a replaced file reruns it even with an older modification time."""
    entry = config["datasets"][wildcards.dataset]
    if _generated(entry.get("root", "")) or entry["kind"] not in ("coco", "revisited"):
        return ""
    path = entry["annotations"] if entry["kind"] == "coco" else gnd_file(wildcards.dataset)
    require(inputs.dataset_paths(wildcards.dataset, entry))
    return fingerprint.folders([path], fingerprint_mode(wildcards.dataset))


def spair_stamp(wildcards):
    """Fingerprint of the SPair-71k pair annotations of the split and of every image."""
    entry = config["datasets"][wildcards.dataset]
    if _generated(entry["root"]):
        return ""
    require(inputs.dataset_paths(wildcards.dataset, entry))
    split = entry.get("split", "test")
    parts = [f"{entry['root']}/PairAnnotation/{split}", f"{entry['root']}/JPEGImages"]
    return fingerprint.folders(parts, fingerprint_mode(wildcards.dataset), recursive=True)


def davis_sequence_stamp(wildcards):
    """Fingerprint of one DAVIS sequence's frames and annotations."""
    entry = config["datasets"][wildcards.dataset]
    if _generated(entry["root"]):
        return ""
    return fingerprint.folders(davis_sequence_input(wildcards), fingerprint_mode(wildcards.dataset))


def train_images(wildcards):
    """Fingerprint of the training images (see indexed_images); '' for objective random."""
    train = train_entry(wildcards)
    return "" if train["objective"] == "random" else _indexed_images(train["dataset"])


def train_entry(wildcards):
    return config["models"][wildcards.model]["train"]


def train_index(wildcards):
    """The index of the training images (none for objective random, which reads no data)."""
    train = train_entry(wildcards)
    return [] if train["objective"] == "random" else [f"results/index/{train['dataset']}.csv"]


def train_figures():
    return expand("results/figures/train/loss.{ext}", ext=["pdf", "png"]) if TRAINED else []


def synthetic_spec(wildcards):
    return config["datasets"][wildcards.dataset].get("synthetic", {})


def _generated(path):
    """The synthetic dataset folder ``path`` lies in (made by the workflow), or None."""
    parts = Path(path).parts
    if len(parts) >= 3 and parts[:2] == ("results", "synthetic"):
        name = parts[2]
        if config["datasets"].get(name, {}).get("kind") == "synthetic":
            return f"results/synthetic/{name}"
    return None


def coco_annotations_input(wildcards):
    """The annotation file of a coco dataset, or the synthetic folder that holds it
    (a file inside a directory() output cannot be an input itself)."""
    entry = config["datasets"][wildcards.dataset]
    if entry["kind"] != "coco":
        return []
    return [_generated(entry["annotations"]) or entry["annotations"]]


def gnd_file(dataset):
    """The ground-truth pickle of a revisited dataset: {root}/{name}/gnd_{name}.pkl."""
    entry = config["datasets"][dataset]
    return f"{entry['root']}/{entry['name']}/gnd_{entry['name']}.pkl"


def gnd_input(wildcards):
    """The gnd pickle of a revisited dataset, or the synthetic folder that holds it."""
    entry = config["datasets"][wildcards.dataset]
    if entry["kind"] != "revisited":
        return []
    return [_generated(entry["root"]) or gnd_file(wildcards.dataset)]


def synthetic_input(wildcards):
    """What the index of a dataset is made from (made by the workflow, or re-indexed when it
    changes); the synthetic folder (kind synthetic, or a folder inside it), the annotation
    file (kind coco) or the ground-truth pickle (kind revisited)."""
    entry = config["datasets"][wildcards.dataset]
    if entry["kind"] == "synthetic":
        return [f"results/synthetic/{wildcards.dataset}"]
    if entry["kind"] == "imagefolder":
        generated = _generated(entry.get("root", ""))
        return [generated] if generated else []
    if entry["kind"] == "revisited":
        return gnd_input(wildcards)
    return coco_annotations_input(wildcards)


def object_annotations_input(wildcards):
    """The coco annotation file (or the synthetic folder holding it) when the dump records objects."""
    return coco_annotations_input(wildcards) if "objects" in products(wildcards) else []


def object_source(wildcards):
    """Root and annotation file of a coco dataset whose dump records objects, else {}."""
    entry = config["datasets"][wildcards.dataset]
    if "objects" not in products(wildcards):
        return {}
    return {"root": entry["root"], "annotations": entry["annotations"]}
def knn_train_dump(wildcards):
    """The memory bank's dump of the model (analyses.knn.train)."""
    return f"results/dumps/{wildcards.model}/{config['analyses']['knn']['train']}.h5"


def revisited_entry(wildcards):
    entry = config["datasets"][wildcards.dataset]
    return {"root": entry["root"], "name": entry["name"], "crop_queries": entry.get("crop_queries", True)}


def spair_entry(wildcards):
    entry = config["datasets"][wildcards.dataset]
    return {"root": entry["root"], "split": entry.get("split", "test")}


def spair_input(wildcards):
    """The pair annotations of a spair dataset, or the synthetic folder that holds them."""
    entry = spair_entry(wildcards)
    if not _generated(entry["root"]):
        require(inputs.dataset_paths(wildcards.dataset, config["datasets"][wildcards.dataset]))
    return [_generated(entry["root"]) or f"{entry['root']}/PairAnnotation/{entry['split']}"]


def spair_figures():
    return [f"results/figures/spair/{dataset}.pdf" for dataset in analysis_datasets("spair")]


def knn_figures():
    return [f"results/figures/knn/{dataset}.pdf" for dataset in analysis_datasets("knn")]


def retrieval_figures():
    return [f"results/figures/retrieval/{dataset}.pdf" for dataset in analysis_datasets("retrieval")]


def davis_sequences(dataset):
    """The sequences of a davis dataset, known when the DAG is built (no checkpoint needed):
    datasets.<name>.sequences when given, else the generator's synthetic.davis_sequences when the
    workflow makes the data (the demo), else {root}/ImageSets/2017/{split}.txt. Called from input
    functions only, so a missing DAVIS copy fails the DAVIS jobs, not every run."""
    entry = config["datasets"][dataset]
    root = entry["root"]
    generated = _generated(root)
    if generated:
        spec = config["datasets"][Path(generated).name].get("synthetic", {})
        if Path(root) != Path(generated, "davis") or not spec.get("davis_sequences"):
            raise WorkflowError(
                f"datasets.{dataset}.root = '{root}' lies in a generated dataset; the generator writes videos to "
                f"'{generated}/davis' when its synthetic.davis_sequences lists their names"
            )
        available = list(spec["davis_sequences"])
    else:
        path = Path(root) / "ImageSets" / "2017" / f"{entry.get('split', 'val')}.txt"
        if not path.is_file():
            if entry.get("sequences"):
                return list(entry["sequences"])
            require(inputs.dataset_paths(dataset, entry))
            raise WorkflowError(
                f"datasets.{dataset}: '{path}' does not exist (the DAVIS layout under root = '{root}'), "
                f"so the sequences are unknown; fix root or list datasets.{dataset}.sequences"
            )
        available = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    chosen = list(entry.get("sequences") or available)
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise WorkflowError(f"datasets.{dataset}.sequences names {', '.join(unknown)}, not in {root}")
    return chosen


def davis_entry(wildcards):
    entry = config["datasets"][wildcards.dataset]
    return {"root": entry["root"], "resolution": entry.get("resolution", "480p")}


def davis_options():
    """The analyses.davis settings a sequence's job uses (not its dataset list)."""
    return {key: value for key, value in config["analyses"]["davis"].items() if key != "datasets"}


def davis_sequence_input(wildcards):
    """The sequence's frame and annotation folders, or the generated folder that holds them."""
    entry = config["datasets"][wildcards.dataset]
    generated = _generated(entry["root"])
    if generated:
        return [generated]
    res = entry.get("resolution", "480p")
    return [f"{entry['root']}/{part}/{res}/{wildcards.sequence}" for part in ("JPEGImages", "Annotations")]


def davis_sequence_tables(wildcards):
    return [f"results/davis/{wildcards.model}/{wildcards.dataset}/sequences/{seq}.csv"
            for seq in davis_sequences(wildcards.dataset)]


def davis_sequence_masks(wildcards):
    return [f"results/davis/{wildcards.model}/{wildcards.dataset}/sequences/{seq}"
            for seq in davis_sequences(wildcards.dataset)]


def davis_figures():
    return [f"results/figures/davis/{dataset}.pdf" for dataset in analysis_datasets("davis")]


def best_layer_tasks():
    """The columns of the best-layer table: one per k-NN query dataset, retrieval, SPair and DAVIS dataset.

    Each is {label, files (every model's tidy result CSV), select (column -> value), scale,
    digits}; a new downstream task adds its entries here (vitscope.tasks.best_layers.Task).
    """
    settings = config["analyses"]["best_layers"]
    tasks = []
    knn = settings["knn"]
    for dataset in analysis_datasets("knn"):
        tasks.append({
            "label": f"{dataset} k-NN {knn['metric'].replace('top', 'top-')} (k={knn['k']})",
            "files": [f"results/knn/{model}/{dataset}.csv" for model in MODELS],
            "select": {"metric": knn["metric"], "k": knn["k"]},
            "scale": 100.0,
            "digits": 2,
        })
    ret = settings["retrieval"]
    for dataset in analysis_datasets("retrieval"):
        tasks.append({
            "label": f"{dataset} ({ret['protocol'][0].upper()}) {ret['metric']}",
            "files": [f"results/retrieval/{model}/{dataset}.csv" for model in MODELS],
            "select": {"metric": ret["metric"], "protocol": ret["protocol"]},
            "scale": 1.0,
            "digits": 2,
        })
    alpha = settings["spair"]["alpha"]
    for dataset in analysis_datasets("spair"):
        tasks.append({
            "label": f"{dataset} PCK@{alpha}",
            "files": [f"results/spair/{model}/{dataset}.csv" for model in MODELS],
            "select": {"metric": "PCK", "alpha": float(alpha)},
            "scale": 100.0,
            "digits": 2,
        })
    dav = settings["davis"]
    for dataset in analysis_datasets("davis"):
        tasks.append({
            "label": f"{dataset} {dav['measure']}",
            "files": [f"results/davis/{model}/{dataset}.csv" for model in MODELS],
            "select": {"measure": dav["measure"], "metric": "mean"},
            "scale": 1.0,
            "digits": 2,
        })
    return tasks


def best_layer_files():
    return [path for task in best_layer_tasks() for path in task["files"]]


def best_layer_tables():
    if not best_layer_tasks():
        return []
    return expand("results/tables/best_layers.{ext}", ext=["csv", "md", "tex"])


def offset_thresholds():
    """The offset-local head detector's thresholds (heads.Thresholds) from the config."""
    settings = config["analyses"]["offset_heads"]
    return {key: settings[key] for key in ("radius", "min_mass", "min_shift")}


def fig_inputs(analysis, pattern):
    """A figure path pattern expanded over the analysis' datasets (and every model when it has {model})."""
    return list(dict.fromkeys(expand(pattern, dataset=analysis_datasets(analysis), model=MODELS)))


def cka_pairs():
    """Every unordered model pair, each model with itself included: [[a, b], ...] in config order."""
    return [[a, b] for i, a in enumerate(MODELS) for b in MODELS[i:]]


def cka_pair_files(wildcards):
    return [f"results/cka/{wildcards.dataset}/{a}/{b}.npz" for a, b in cka_pairs()]


def cka_figures(kind):
    """The full-depth CKA figure of every model pair ("full") or the last-layer figure ("last") per dataset."""
    datasets = analysis_datasets("cka")
    if kind == "last":
        return [f"results/figures/cka_last/{dataset}.pdf" for dataset in datasets]
    return [f"results/figures/cka_full/{dataset}/{a}/{b}.pdf" for dataset in datasets for a, b in cka_pairs()]


def clustering_figures():
    return expand("results/figures/clustering/{dataset}_{metric}.pdf", dataset=analysis_datasets("clustering"),
                  metric=CLUSTER_METRICS)


def object_clustering_figures():
    return expand("results/figures/object_clustering/{dataset}_{metric}.pdf",
                  dataset=analysis_datasets("object_clustering"), metric=CLUSTER_METRICS)


def all_targets():
    targets = []
    for dataset in analysis_datasets("cls_maps"):
        targets += expand("results/figures/cls_maps/{model}/{dataset}.pdf", model=MODELS, dataset=dataset)
    for dataset in analysis_datasets("attention_distance"):
        targets += [
            f"results/figures/attention_distance/{dataset}.pdf",
            f"results/figures/attention_distance/{dataset}_heads.pdf",
        ]
    for dataset in analysis_datasets("offset_heads"):
        targets += expand(
            "results/figures/{figure}/{model}/{dataset}.pdf", figure=["aaam", "offsets"], model=MODELS, dataset=dataset
        )
        targets += [
            f"results/tables/offset_heads/{dataset}.csv",
            f"results/figures/offset_heads/{dataset}.pdf",
            f"results/figures/offset_scatter/{dataset}.pdf",
        ]
    for dataset in analysis_datasets("cls_heads"):
        targets.append(f"results/figures/cls_heads/{dataset}.pdf")
    for dataset in analysis_datasets("saliency"):
        targets.append(f"results/figures/saliency_iou/{dataset}.pdf")
    for dataset in analysis_datasets("attention_grids"):
        targets += expand("results/figures/attention_grids/{model}/{dataset}", model=MODELS, dataset=dataset)
    targets += cka_figures("full") + cka_figures("last")
    targets += clustering_figures()
    targets += object_clustering_figures()
    targets += knn_figures() + retrieval_figures() + best_layer_tables()
    targets += spair_figures()
    targets += davis_figures()
    targets += train_figures()
    return targets


# The HTML report (`snakemake --report report.zip`): every figure is registered with a
# caption (workflow/report/<figure>.rst), the study's question as category, the figure
# as subcategory, and labels (figure, model, dataset, ...) to find it by.
REPORT_TRAINING = "2. Training (models the workflow trains)"
REPORT_ATTENTION = "3. Attention (how)"
REPORT_FEATURES = "4. Features (what)"
REPORT_DOWNSTREAM = "5. Downstream (why)"


def figure_report(path, figure, category, caption=None, patterns=None, **labels):
    """``path`` flagged for the report; label values may hold wildcards ("{model}").

    ``caption`` defaults to the figure's name; ``patterns`` selects the files of a
    directory output (e.g. ["{image}.png"]).
    """
    return report(
        path,
        caption=f"../workflow/report/{caption or figure}.rst",
        category=category,
        subcategory=figure.replace("_", " "),
        labels={"figure": figure.replace("_", " "), **labels},
        patterns=patterns or [],
    )


# A GPU belongs to one machine: --resources gpu=1 (profiles/default) limits a local run
# or one cluster job, never how many jobs a cluster run submits.
resource_scopes:
    gpu="local",


# Resources (used by the Slurm profile, profiles/slurm; a local run only counts `gpu`,
# limited by profiles/default). Rules that run a model over a dataset, like extract,
# declare `resources: gpu=model_gpus, mem_mb=model_mem_mb, runtime=model_runtime`;
# every other rule gets the profile's default-resources. See README "Running on a
# Slurm cluster".

# Conservative throughput of a full extraction for wall-time requests, images/s
# (docs/performance.md: ViT-B/16 ~800/s on an H100/H200, ViT-S/16 ~10/s on two
# CPU threads; ViT-L/14 costs about 6x B/16).
IMAGES_PER_S = {"gpu": 25.0, "cpu": 0.5}
# Images assumed for a dataset whose size is not known before it is indexed.
DEFAULT_IMAGES = 10000


def dataset_images(dataset, index=None):
    """Images in ``dataset``: rows of its index CSV when it exists, else what the config tells, else a guess."""
    if index and Path(index).is_file():
        with open(index, newline="") as handle:
            return max(0, sum(1 for _ in csv.reader(handle)) - 1)
    entry = config["datasets"][dataset]
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


def model_gpus(wildcards):
    """1 when extract.device may use CUDA (auto, cuda, cuda:N), else 0."""
    return 1 if config["extract"]["device"].startswith(("auto", "cuda")) else 0


def model_runtime(wildcards, input, attempt):
    """Wall time in minutes of a pass over the dataset: 10 + images at IMAGES_PER_S, doubled per retry."""
    rate = IMAGES_PER_S["gpu" if model_gpus(wildcards) else "cpu"]
    images = dataset_images(wildcards.dataset, input.get("index"))
    return (10 + math.ceil(images / rate / 60)) * attempt


def model_mem_mb(wildcards, attempt):
    """Host memory in MB: the flat extraction RSS (docs/performance.md) plus 1 GB per loader worker."""
    return (6000 + 1000 * config["extract"]["num_workers"]) * attempt


def figure_rules():
    """Every plot_* rule: figures read small tables, so a cluster run makes them on the submitting host."""
    return [rule.name for rule in workflow.rules if rule.name.startswith("plot_")]
