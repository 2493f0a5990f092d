# Look-ups and input functions shared by the other .smk files, thin wrappers of vitscope.workflow
# (plain Python with unit tests): checks (config checks), registry (analyses, targets, report
# entries, local rules, Slurm groups), versions (code versions), stamps (fingerprints),
# lookups (paths and inputs of a config), resources (Slurm requests) and summary (the end-of-run summary).

import functools
import os
import re
from pathlib import Path

# Torch-free (the Snakefile put the workflow's own src/ first on sys.path).
from vitscope.errors import ConfigError
from vitscope.workflow import checks, lookups, registry, resources, stamps, summary, versions

MODELS = list(config["models"])
TRAINED = checks.trained_models(config)


def _workflow_error(func, *args):
    """``func(*args)``, a ConfigError raised as the WorkflowError Snakemake reports (same message)."""
    try:
        return func(*args)
    except ConfigError as err:
        raise WorkflowError(str(err)) from None


# What the analyses need of their datasets and models (the schema and configcheck ran in the Snakefile).
_workflow_error(checks.check, config)

CODE = versions.CodeVersions(Path(workflow.basedir) / "src/vitscope", Path(workflow.basedir) / "workflow/scripts")


def code_of(script):
    """Hash of the package code workflow/scripts/<script>.py imports, directly or not
    (vitscope.workflow.versions): a param, so editing that code reruns the rule."""
    return _workflow_error(CODE.code_of, script)


# Every model or dataset a wildcard names is looked up through lookups.model / lookups.dataset:
# a target naming one the config lacks fails listing the configured names (no bare KeyError).
def model_entry(wildcards):
    return lookups.model_entry(config, wildcards.model)


def dataset_entry(wildcards):
    return lookups.dataset_entry(config, wildcards.dataset)


def token_storage(wildcards):
    """datasets.<name>.tokens and token_dtype: what the dump keeps of tokens/cls and tokens/spatial_mean."""
    entry = lookups.dataset_entry(config, wildcards.dataset)
    return {"tokens": entry.get("tokens", "both"), "dtype": entry.get("token_dtype", "float32")}


def _of_dataset(lookup):
    """An input or param function: ``lookup(config, wildcards.dataset)`` (vitscope.workflow.lookups)."""
    return lambda wildcards: lookup(config, wildcards.dataset)


products = _of_dataset(lookups.products)
index_entry = _of_dataset(lookups.index_entry)  # the entry without the extraction keys (shards)
synthetic_input = _of_dataset(lookups.index_inputs)  # what the index is made from
coco_annotations_input = _of_dataset(lookups.coco_annotations_input)
gnd_input = _of_dataset(lookups.gnd_input)
object_annotations_input = _of_dataset(lookups.object_annotations_input)
object_source = _of_dataset(lookups.object_source)
revisited_entry = _of_dataset(lookups.revisited_entry)
spair_entry = _of_dataset(lookups.spair_entry)
davis_entry = _of_dataset(lookups.davis_entry)


def synthetic_spec(wildcards):
    return dataset_entry(wildcards).get("synthetic", {})


@functools.cache
def missing_inputs():
    """Every checkpoint and dataset path of the config that does not exist (workflow-made ones aside)."""
    return lookups.missing_inputs(config)


def require(needs):
    """Stop planning, listing every missing input of the config, when one of ``needs`` is missing.

    Called from the input and param functions of the jobs that read a model or a
    dataset, so a target that needs none of the missing files is not blocked, and a
    run that does is told everything missing at once (not one file per attempt).
    """
    paths = {need.path for need in needs}
    if any(need.path in paths for need in missing_inputs()):
        raise WorkflowError(lookups.missing_message(missing_inputs(), Path.cwd()))


# The datasets extracted in shards: the only dumps rule merge_shards makes (a regex that matches
# no name when there is none).
SHARDED = "|".join(re.escape(name) for name in lookups.sharded_datasets(config)) or "(?!)"


def shard_files(wildcards):
    """The shard files of the job's dump (datasets.<name>.shards of them)."""
    return lookups.shard_files(config, wildcards.model, wildcards.dataset)


def checkpoint_input(wildcards):
    """The model's checkpoint file, an input of every job that loads the model.

    A file no rule makes (anything but a train rule's output) must exist when a
    job needs it: the error names the config key, the file and where the release
    is published, with every other missing input of the config.
    """
    path = _checkpoint_file(wildcards.model)
    if path is None:
        return []
    if wildcards.model not in TRAINED:
        require(_checkpoint_needs(wildcards.model))
    return [path]


# Pure look-ups of the config keyed by a wildcard, asked by every job of the model or dataset: once each.
_checkpoint_file = functools.cache(functools.partial(lookups.checkpoint_file, config))
_checkpoint_needs = functools.cache(functools.partial(lookups.checkpoint_needs, config))
_davis_sequence_input = functools.cache(functools.partial(lookups.davis_sequence_input, config))


# Fingerprints of what a job reads that Snakemake cannot see into (vitscope.workflow.stamps;
# docs/hostile-inputs.md, "Changed weights and data"): params, so a changed file reruns the job.
STAMPS = stamps.Stamps(config, require)


def checkpoint_stamp(wildcards):
    return STAMPS.checkpoint(wildcards.model, wildcards.model in TRAINED)


def dataset_fingerprint(wildcards):
    return STAMPS.dataset(wildcards.dataset)


def indexed_images(wildcards):
    return STAMPS.indexed_images(wildcards.dataset)


def annotation_stamp(wildcards):
    return STAMPS.annotations(wildcards.dataset)


def spair_stamp(wildcards):
    return STAMPS.spair(wildcards.dataset)


def davis_sequence_stamp(wildcards):
    return STAMPS.davis_sequence(wildcards.dataset, wildcards.sequence)


def train_entry(wildcards):
    return model_entry(wildcards)["train"]


def train_images(wildcards):
    """Fingerprint of the training images (see indexed_images); '' for objective random."""
    train = train_entry(wildcards)
    return "" if train["objective"] == "random" else STAMPS.indexed_images(train["dataset"])


def train_index(wildcards):
    return lookups.train_index(config, wildcards.model)


def knn_train_dump(wildcards):
    """The memory bank's dump of the model (analyses.knn.train)."""
    return f"results/dumps/{wildcards.model}/{config['analyses']['knn']['train']}.h5"


def spair_input(wildcards):
    return lookups.spair_input(config, wildcards.dataset, require)


def davis_sequences(dataset):
    return _workflow_error(lookups.davis_sequences, config, dataset, require)


def davis_sequence_input(wildcards):
    return _davis_sequence_input(wildcards.dataset, wildcards.sequence)


def davis_sequence_outputs(suffix):
    """Every sequence's table (".csv") or mask folder ("") of the job's model and dataset."""
    return lambda wildcards: [
        f"results/davis/{wildcards.model}/{wildcards.dataset}/sequences/{seq}{suffix}"
        for seq in davis_sequences(wildcards.dataset)
    ]


def best_layer_tasks():
    """The best-layer table's columns (vitscope.workflow.lookups.best_layer_tasks)."""
    return lookups.best_layer_tasks(config)


def best_layer_files():
    return [path for task in best_layer_tasks() for path in task["files"]]


def cka_pairs():
    """Every unordered model pair, each model with itself included: [[a, b], ...] in config order."""
    return registry.model_pairs(MODELS)


def cka_pair_files(wildcards):
    return [f"results/cka/{wildcards.dataset}/{a}/{b}.npz" for a, b in cka_pairs()]


# The HTML report (`snakemake --report results/report.zip`): every figure is registered with a
# caption (workflow/report/<caption>.rst), its analysis' question as category, the figure
# as subcategory, and labels (figure, model, dataset, ...) to find it by; the CSV of numbers
# beside a figure goes into the figure's subcategory, and a table (the best-layer table's HTML
# page and CSV) into its own; all from vitscope.workflow.registry, which also checks the path
# against the registered one.
def figure_report(path, figure):
    """``path`` (the plot rule's PNG, its folder of PNGs, the CSV of numbers beside it, or a
    registered table's file) flagged for the report as figure or table ``figure``."""
    entry = _workflow_error(registry.report_entry, figure, path)
    return report(
        path,
        caption=f"../workflow/report/{entry['caption']}.rst",
        category=entry["category"],
        subcategory=entry["subcategory"],
        labels=entry["labels"],
        patterns=entry["patterns"],
    )


# A GPU belongs to one machine: --resources gpu=1 (profiles/default) limits a local run
# or one cluster job, never how many jobs a cluster run submits.
resource_scopes:
    gpu="local",


# Rules that run a model over a dataset (registry class MODEL: extract, spair, davis_sequence)
# declare `resources: gpu=model_gpus, mem_mb=model_mem_mb, runtime=model_runtime`
# (vitscope.workflow.resources); every other rule gets the Slurm profile's default-resources.
#: 1 when extract.device may use CUDA (auto, cuda, cuda:N), else 0: a number, not a function (one
#: call fewer per job when the DAG is built)
model_gpus = resources.model_gpus(config)


def model_runtime(wildcards, input, attempt):
    """Wall time in minutes of a pass over the dataset (a shard's share of it), doubled per retry (its
    input `index` counts the images)."""
    shards = int(wildcards.get("shards", 1))
    return resources.model_runtime(config, wildcards.dataset, input.get("index"), attempt, shards)


def model_mem_mb(wildcards, attempt):
    return resources.model_mem_mb(config, attempt)


# Sharded extraction (rules/extract.smk, docs/dumps.md#sharding): the merge is light.
def merge_runtime(wildcards, input, attempt):
    return resources.merge_runtime(input.size_mb, attempt)


def merge_mem_mb(wildcards, attempt):
    return resources.merge_mem_mb(attempt)


def cache_signatures(rules, functions):
    """Each input, param and resource function of ours (defined in the workflow's own files: those
    the ``rules`` hold and ``functions``, the Snakefile's globals) gets its parameters once, through
    Snakemake's own ``overwrite_function_params``; Snakemake otherwise calls ``inspect.signature``
    at every call of every such function (37,500 times in the study's dry run, 11 % of its time
    under cProfile; docs/performance.md, "Planning the study's DAG")."""
    import inspect
    import types

    from snakemake.common import FUNC_OVERWRITE_PARAMS_ATTR, overwrite_function_params

    base = str(workflow.basedir)
    items = [item for rule in rules for item in (*rule.input, *rule.log, *rule.params)] + list(functions)
    for item in items:
        func = item
        if isinstance(item, str):  # an input or log file given as a function
            func = getattr(getattr(item, "_file", None), "callable", None)
        if not isinstance(func, types.FunctionType) or not func.__code__.co_filename.startswith(base):
            continue
        if hasattr(func, FUNC_OVERWRITE_PARAMS_ATTR):
            continue
        overwrite_function_params(func, inspect.signature(func).parameters)


# `snakemake estimate` (rules/estimate.smk): the dumps' bytes and job-hours before any job runs.
def estimate_rows(wildcards):
    """results/estimate.tsv's rows and the summary it prints (h5py is imported only here)."""
    from vitscope.workflow import estimate

    indexes = {name: f"results/index/{name}.csv" for name in config["datasets"]}
    rows = _workflow_error(estimate.estimate, config, indexes)
    return {"table": estimate.table(rows), "summary": estimate.summary(rows)}


def run_summary():
    """What a successful run prints (the Snakefile's onsuccess; vitscope.workflow.summary): the
    outputs of its jobs that exist, the best-layer table, the report command for its targets."""
    dag = workflow.dag
    outputs = dict.fromkeys(str(f) for job in dag.jobs for f in job.output)
    existing = [path for path in outputs if os.path.exists(path)]
    table = Path(summary.TABLE).read_text() if summary.TABLE in existing else None
    targets = [rule.name for rule in dag.targetrules if rule.name != "all"] + sorted(dag.targetfiles)
    configfiles = [str(path) for path in workflow.overwrite_configfiles or []]
    return summary.text(existing, table, targets, configfiles)
