"""Every analysis of the workflow, registered once: what the rule files derive from it.

An :class:`Analysis` names its config key (``analyses.<key>.datasets``: the datasets it runs on),
its figures (:class:`Figure`: path pattern, report caption, plot rule, single-figure target rule),
other targets (tables), the report category of its figures and the Slurm class of each of its
rules. From these the rule files take (rules/common.smk, rules/targets.smk):

- ``rule all``'s inputs: :func:`targets` (every figure and table of every analysis that runs);
- the single-figure target rules (``fig_<figure>``, ``fig_cka``, ``table_best_layers``): :func:`target_rules`;
- each report item's entry (``figure_report(path, name)``: a figure's PNG, the CSV of numbers beside it,
  a table such as the best-layer table's HTML page and CSV): :func:`report_entry`;
- the local rules (every figure's plot rule runs on the submitting host): :func:`local_rules`;
- the Slurm profile's ``groups`` and ``group-components`` (profiles/slurm/config.yaml, which
  tests/test_registry.py checks against :func:`slurm_groups`; ``python -m vitscope.workflow.registry``
  prints them).

Adding an analysis: :func:`register` it below (its rules live in its rule file); see
docs/development.md, "Adding an analysis".
Nothing here imports torch or Snakemake: it runs at every Snakemake start.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

# The report's categories: the study's questions, numbered in the order the report lists them
# (its menu sorts the names).
TRAINING = "1. Training (models the workflow trains)"
ATTENTION = "2. Attention (how)"
FEATURES = "3. Features (what)"
DOWNSTREAM = "4. Downstream (why)"
CATEGORIES = (TRAINING, ATTENTION, FEATURES, DOWNSTREAM)

#: the report caption of every CSV of numbers beside a figure (workflow/report/<name>.rst)
NUMBERS_CAPTION = "figure_numbers"

#: the clustering figures' {metric} wildcard
CLUSTER_METRICS = ("purity", "nmi", "ari")

# Slurm classes of a rule (profiles/slurm/config.yaml): a group's jobs share sbatch jobs, up to
# GROUP_COMPONENTS[group] independent pieces each; MODEL runs a model over a dataset (its rule
# declares resources gpu=model_gpus, mem_mb=model_mem_mb, runtime=model_runtime); JOB is an
# sbatch job of its own with the profile's default-resources.
INPUTS = "inputs"
TABLES = "tables"
MODEL = "model"
JOB = "job"
GROUP_COMPONENTS: dict[str, int] = {INPUTS: 100, TABLES: 16}
CLASSES = (*GROUP_COMPONENTS, MODEL, JOB)

Config = Mapping[str, Any]


@dataclass(frozen=True)
class Figure:
    """One figure (a PDF and a PNG per wildcard value, or a folder of PNGs) that a plot rule makes.

    ``path`` is the pattern without extension, in the plot rule's wildcards ({model}, {dataset},
    {model_a}/{model_b}, {metric}; {task} is the analysis' name): ``<path>.pdf`` (and the other
    ``targets`` extensions) are the targets, ``<path>.png`` the report entry. A ``directory``
    figure is the folder ``<path>`` itself, its report entry the files ``patterns`` match.
    ``numbers``: the extensions of the files beside the figure that hold its numbers
    (``<path>.csv``), report entries too (same category and subcategory, label ``file``).
    """

    name: str  # the report's subcategory and 'figure' label
    path: str
    caption: str | None = None  # workflow/report/<caption>.rst; default: name
    plot: str | None = None  # the plot rule; default: plot_<name>
    target: str | None = None  # the single-figure target rule; default: fig_<name>
    targets: tuple[str, ...] = ("pdf",)
    directory: bool = False
    patterns: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()

    @property
    def caption_name(self) -> str:
        return self.caption or self.name

    @property
    def plot_rule(self) -> str:
        return self.plot or f"plot_{self.name}"

    @property
    def target_rule(self) -> str:
        return self.target or f"fig_{self.name}"

    @property
    def report_path(self) -> str:
        return self.path if self.directory else f"{self.path}.png"

    def target_patterns(self) -> list[str]:
        return [self.path] if self.directory else [f"{self.path}.{ext}" for ext in self.targets]

    @property
    def numbers_paths(self) -> list[str]:
        return [f"{self.path}.{ext}" for ext in self.numbers]


@dataclass(frozen=True)
class ReportTable:
    """A table (not a figure) that the report shows: ``<path>.<ext>`` for each of ``formats``
    (HTML is shown in the report, CSV downloaded), written by one of the analysis' rules."""

    name: str  # the report's subcategory and 'table' label
    path: str
    formats: tuple[str, ...] = ("html", "csv")
    caption: str | None = None  # workflow/report/<caption>.rst; default: name

    @property
    def caption_name(self) -> str:
        return self.caption or self.name

    @property
    def report_paths(self) -> list[str]:
        return [f"{self.path}.{ext}" for ext in self.formats]


@dataclass(frozen=True)
class Analysis:
    """One analysis: the datasets it runs on, its targets, its report category and its rules' Slurm classes."""

    name: str
    category: str
    figures: tuple[Figure, ...] = ()
    tables: tuple[str, ...] = ()  # other targets (rule all), same wildcards as a figure's path
    rules: Mapping[str, str] = field(default_factory=dict)  # rule -> Slurm class (CLASSES)
    config: str | None = ""  # analyses.<config>.datasets; "" means the name, None no config key
    target: str | None = None  # a target rule for all its figures and tables (fig_cka)
    when: Callable[[Config], bool] | None = None  # whether it runs; default: it has datasets
    report: tuple[ReportTable, ...] = ()  # tables the report shows (their paths are among ``tables``)

    @property
    def key(self) -> str | None:
        return self.name if self.config == "" else self.config

    def datasets(self, config: Config) -> list[str]:
        if self.key is None:
            return []
        return list(config.get("analyses", {}).get(self.key, {}).get("datasets", []))

    def runs(self, config: Config) -> bool:
        return self.when(config) if self.when is not None else bool(self.datasets(config))

    def expand(self, pattern: str, config: Config) -> list[str]:
        """``pattern`` for every dataset of the analysis, model (or model pair) and metric it names."""
        if not self.runs(config):
            return []
        fields = {name for _, name, _, _ in string.Formatter().parse(pattern) if name}
        unknown = fields - {"dataset", "model", "model_a", "model_b", "metric", "task"}
        if unknown or ("model_a" in fields) != ("model_b" in fields):
            raise ConfigError(f"analysis {self.name}: pattern '{pattern}' has wildcards {sorted(fields)}; "
                              "known are dataset, model, model_a with model_b, metric and task")
        models = list(config["models"])
        axes: list[list[dict[str, str]]] = []
        if "dataset" in fields:
            axes.append([{"dataset": d} for d in self.datasets(config)])
        if "model" in fields:
            axes.append([{"model": m} for m in models])
        if "model_a" in fields:
            axes.append([{"model_a": a, "model_b": b} for a, b in model_pairs(models)])
        if "metric" in fields:
            axes.append([{"metric": m} for m in CLUSTER_METRICS])
        out = []
        for combination in itertools.product(*axes):
            values = {"task": self.name}
            for part in combination:
                values.update(part)
            out.append(pattern.format(**values))
        return out

    def targets(self, config: Config) -> list[str]:
        patterns = [p for figure in self.figures for p in figure.target_patterns()] + list(self.tables)
        return list(dict.fromkeys(path for p in patterns for path in self.expand(p, config)))


def model_pairs(models: list[str]) -> list[list[str]]:
    """Every unordered model pair, each model with itself included: [[a, b], ...] in config order."""
    return [[a, b] for i, a in enumerate(models) for b in models[i:]]


#: every registered analysis, in registration order (the order of rule all's inputs)
ANALYSES: dict[str, Analysis] = {}
#: rules that belong to no analysis (data, extraction): rule -> Slurm class
OTHER_RULES: dict[str, str] = {}


def register(analysis: Analysis) -> Analysis:
    """Add ``analysis``; its name, rules and figure names must be new (a figure shared by several
    analyses, like the downstream tasks' "{task}", must be the same object with the same category)."""
    if analysis.name in ANALYSES:
        raise ConfigError(f"analysis {analysis.name} is registered twice")
    for rule, cls in analysis.rules.items():
        if cls not in CLASSES:
            raise ConfigError(f"analysis {analysis.name}: rule {rule} has Slurm class {cls!r}, not one of {CLASSES}")
        if rule in rule_classes():
            raise ConfigError(f"analysis {analysis.name}: rule {rule} already belongs to another analysis")
    for figure in analysis.figures:
        for other, theirs in figures().items():
            if figure.name == other and (figure is not theirs[1] or analysis.category != theirs[0].category):
                raise ConfigError(f"analysis {analysis.name}: figure {figure.name} is registered already")
    for table in analysis.report:
        if table.name in figures() or table.name in report_tables() or table.name in (f.name for f in analysis.figures):
            raise ConfigError(f"analysis {analysis.name}: report table {table.name} is registered already")
    ANALYSES[analysis.name] = analysis
    return analysis


def register_rules(rules: Mapping[str, str]) -> None:
    """Slurm classes of rules outside every analysis (data, extraction)."""
    for rule, cls in rules.items():
        if cls not in CLASSES or rule in rule_classes():
            raise ConfigError(f"rule {rule}: Slurm class {cls!r} (one of {CLASSES}), or registered twice")
        OTHER_RULES[rule] = cls


def figures() -> dict[str, tuple[Analysis, Figure]]:
    """Figure name -> (the first analysis that has it, the figure)."""
    found: dict[str, tuple[Analysis, Figure]] = {}
    for analysis in ANALYSES.values():
        for figure in analysis.figures:
            found.setdefault(figure.name, (analysis, figure))
    return found


def rule_classes() -> dict[str, str]:
    """Every registered rule -> its Slurm class."""
    classes = dict(OTHER_RULES)
    for analysis in ANALYSES.values():
        classes.update(analysis.rules)
    return classes


def targets(config: Config) -> list[str]:
    """``rule all``'s inputs: every target of every analysis that runs on ``config``."""
    return list(dict.fromkeys(path for a in ANALYSES.values() for path in a.targets(config)))


def target_rules(config: Config) -> dict[str, list[str]]:
    """Single-target rules -> their inputs: ``fig_<figure>`` (figures sharing a target rule go
    together, e.g. fig_attention_distance) and an analysis' own target (fig_cka, table_best_layers)."""
    rules: dict[str, list[str]] = {}
    for analysis in ANALYSES.values():
        for figure in analysis.figures:
            files = rules.setdefault(figure.target_rule.format(task=analysis.name), [])
            files += [p for pattern in figure.target_patterns() for p in analysis.expand(pattern, config)]
        if analysis.target:
            rules.setdefault(analysis.target, []).extend(analysis.targets(config))
    return {rule: list(dict.fromkeys(files)) for rule, files in rules.items()}


def local_rules() -> list[str]:
    """Every figure's plot rule: figures read small tables, so a cluster run makes them on the submitting host."""
    return list(dict.fromkeys(figure.plot_rule for _, figure in figures().values()))


def tasks() -> list[str]:
    """The analyses whose figures are one plot rule's {task} wildcard (the downstream tasks)."""
    return [a.name for a in ANALYSES.values() if any("{task}" in figure.path for figure in a.figures)]


def slurm_groups() -> dict[str, str]:
    """The Slurm profile's ``groups``: rule -> group, for every rule of a grouped class."""
    return {rule: cls for rule, cls in rule_classes().items() if cls in GROUP_COMPONENTS}


def slurm_profile_lines() -> str:
    """The ``groups`` and ``group-components`` entries of profiles/slurm/config.yaml, as YAML."""
    lines = ["groups:", *(f"  - {rule}={group}" for rule, group in slurm_groups().items()), "group-components:"]
    lines += [f"  - {group}={n}" for group, n in GROUP_COMPONENTS.items()]
    return "\n".join(lines) + "\n"


def _fields(pattern: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(pattern) if name]


def report_tables() -> dict[str, tuple[Analysis, ReportTable]]:
    """Report table name -> (its analysis, the table)."""
    return {table.name: (analysis, table) for analysis in ANALYSES.values() for table in analysis.report}


#: the ``file`` label: what a report item of a figure with numbers, or of a table, is
FILE_LABELS = {"png": "figure", "csv": "numbers (CSV)", "html": "table"}


def report_entry(name: str, path: str) -> dict[str, Any]:
    """What the report shows of figure or table ``name``, whose rule registers ``path``.

    Keys: caption (the name of workflow/report/<caption>.rst), category, subcategory, labels
    and patterns (a folder's files). A figure's labels: ``figure``; ``model``: the model,
    "<a> vs <b>" or "all"; then every other wildcard but {task}, which names the figure; and
    ``file`` (figure or numbers) when CSVs of numbers lie beside it (``Figure.numbers``), which
    are entries of the same subcategory with caption NUMBERS_CAPTION. A table's labels:
    ``table`` and ``file`` (table or numbers).
    """
    found = figures().get(name)
    if found is None:
        if name in report_tables():
            return _table_entry(*report_tables()[name], str(path))
        raise ConfigError(f"figure_report: no figure or table '{name}' is registered (vitscope.workflow.registry)")
    analysis, figure = found
    if str(path) != figure.report_path and str(path) not in figure.numbers_paths:
        raise ConfigError(f"figure_report: figure '{name}' is registered at '{figure.report_path}'"
                          + "".join(f" (numbers '{p}')" for p in figure.numbers_paths) + f", not '{path}'")
    wildcards = _fields(figure.report_path) + [f for p in figure.patterns for f in _fields(p)]
    if "model" in wildcards:
        model = "{model}"
    elif "model_a" in wildcards:
        model = "{model_a} vs {model_b}"
    else:
        model = "all"
    labels = {"figure": name.replace("_", " "), "model": model}
    labels.update({w: f"{{{w}}}" for w in wildcards if w not in ("model", "model_a", "model_b", "task")})
    numbers = str(path) in figure.numbers_paths
    if figure.numbers:
        labels["file"] = FILE_LABELS[str(path).rsplit(".", 1)[-1]] if numbers else FILE_LABELS["png"]
    return {
        "caption": NUMBERS_CAPTION if numbers else figure.caption_name,
        "category": analysis.category,
        "subcategory": name.replace("_", " "),
        "labels": labels,
        "patterns": [] if numbers else list(figure.patterns),
    }


def _table_entry(analysis: Analysis, table: ReportTable, path: str) -> dict[str, Any]:
    if path not in table.report_paths:
        raise ConfigError(f"figure_report: table '{table.name}' is registered at {table.report_paths}, not '{path}'")
    return {
        "caption": table.caption_name,
        "category": analysis.category,
        "subcategory": table.name.replace("_", " "),
        "labels": {"table": table.name.replace("_", " "), "file": FILE_LABELS[path.rsplit(".", 1)[-1]]},
        "patterns": [],
    }


# --------------------------------------------------------------------------- the workflow's analyses

# estimate: a local rule (rules/estimate.smk), never submitted
register_rules(
    {"synthetic_dataset": INPUTS, "index_dataset": INPUTS, "extract": MODEL, "extract_shard": MODEL,
     "merge_shards": JOB, "estimate": JOB}
)


def _trains(config: Config) -> bool:
    return any("train" in entry for entry in config["models"].values())


def _downstream(config: Config) -> bool:
    """The best-layer table has a column when any downstream task runs (lookups.best_layer_tasks)."""
    return any(ANALYSES[task].datasets(config) for task in ("knn", "retrieval", "spair", "davis"))


#: the downstream tasks' figure (one plot rule for every task: results/figures/{task}/{dataset}.pdf)
DOWNSTREAM_FIGURE = Figure("{task}", "results/figures/{task}/{dataset}", caption="downstream", plot="plot_downstream",
                           target="fig_{task}", numbers=("csv",))

register(Analysis(
    "cls_maps", ATTENTION,
    figures=(Figure("cls_maps", "results/figures/cls_maps/{model}/{dataset}"),),
    rules={"attention_maps": TABLES},
))
register(Analysis(
    "attention_distance", ATTENTION,
    figures=(
        Figure("attention_distance", "results/figures/attention_distance/{dataset}"),
        Figure("attention_distance_heads", "results/figures/attention_distance/{dataset}_heads",
               caption="attention_distance", plot="plot_attention_distance", target="fig_attention_distance"),
    ),
    rules={"attention_distance": TABLES},
))
register(Analysis(
    "offset_heads", ATTENTION,
    figures=(
        Figure("aaam", "results/figures/aaam/{model}/{dataset}"),
        Figure("offsets", "results/figures/offsets/{model}/{dataset}"),
        Figure("offset_heads", "results/figures/offset_heads/{dataset}"),
        Figure("offset_scatter", "results/figures/offset_scatter/{dataset}"),
    ),
    tables=("results/tables/offset_heads/{dataset}.csv",),
    rules={"aaam": TABLES, "offset_heads": TABLES, "offset_heads_table": TABLES},
))
register(Analysis(
    "cls_heads", ATTENTION,
    figures=(Figure("cls_heads", "results/figures/cls_heads/{dataset}"),),
    rules={"cls_heads": TABLES},
))
register(Analysis(
    "saliency", ATTENTION,
    figures=(Figure("saliency_iou", "results/figures/saliency_iou/{dataset}"),),
    rules={"saliency_iou": TABLES},
))
register(Analysis(
    "attention_grids", ATTENTION,
    figures=(Figure("attention_grids", "results/figures/attention_grids/{model}/{dataset}", directory=True,
                    patterns=("{image}.png",)),),
    rules={"attention_exemplars": TABLES},
))
register(Analysis(
    "cka", FEATURES,
    figures=(
        Figure("cka_full", "results/figures/cka_full/{dataset}/{model_a}/{model_b}", numbers=("csv",)),
        Figure("cka_last", "results/figures/cka_last/{dataset}", numbers=("csv",)),
    ),
    rules={"cka_pair": TABLES},
    target="fig_cka",
))
register(Analysis(
    "clustering", FEATURES,
    figures=(Figure("clustering", "results/figures/clustering/{dataset}_{metric}", numbers=("csv",)),),
    rules={"clustering": TABLES},
))
register(Analysis(
    "object_clustering", FEATURES,
    figures=(Figure("object_clustering", "results/figures/object_clustering/{dataset}_{metric}", numbers=("csv",)),),
    rules={"object_clustering": TABLES},
))
register(Analysis("knn", DOWNSTREAM, figures=(DOWNSTREAM_FIGURE,), rules={"knn": TABLES}))
register(Analysis("retrieval", DOWNSTREAM, figures=(DOWNSTREAM_FIGURE,), rules={"retrieval": TABLES}))
register(Analysis("spair", DOWNSTREAM, figures=(DOWNSTREAM_FIGURE,), rules={"spair": MODEL}))
register(Analysis("davis", DOWNSTREAM, figures=(DOWNSTREAM_FIGURE,),
                  rules={"davis_sequence": MODEL, "davis": TABLES}))
register(Analysis(
    "best_layers", DOWNSTREAM,
    tables=tuple(f"results/tables/best_layers.{ext}" for ext in ("csv", "md", "tex", "html")),
    report=(ReportTable("best_layers", "results/tables/best_layers"),),
    rules={"best_layers": TABLES},
    target="table_best_layers",
    when=_downstream,
))
register(Analysis(
    "train", TRAINING,
    figures=(Figure("train_loss", "results/figures/train/loss", targets=("pdf", "png")),),
    rules={"train": JOB},
    config=None,
    when=_trains,
))


if __name__ == "__main__":
    print(slurm_profile_lines(), end="")
