"""The registry of analyses (vitscope.workflow.registry) against what it is derived into and from:
the schema's analyses and dump products, the rule files, the report captions, the Slurm profile.
The workflow side (a toy analysis registered in a copied workflow) is tests/test_registry_workflow.py."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from vitscope.errors import ConfigError
from vitscope.workflow import configcheck, registry

REPO = Path(__file__).resolve().parents[1]
SCHEMA = configcheck.load_schema(REPO / "workflow/schemas/config.schema.yaml")


def demo() -> dict[str, Any]:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    configcheck.prepare(config, SCHEMA)
    return config


def rule_chunks() -> dict[str, str]:
    """Rule name -> its text, for every named rule of rules/*.smk."""
    found = {}
    for path in sorted((REPO / "rules").glob("*.smk")):
        for chunk in re.split(r"^(?=(?:rule|checkpoint) \w+:)", path.read_text(), flags=re.M):
            if m := re.match(r"(?:rule|checkpoint) (\w+):", chunk):
                found[m.group(1)] = chunk
    return found


def dumps_module():
    from vitscope.io import dumps

    return dumps


# --------------------------------------------------------------------------- what the registry derives from


def test_every_analysis_of_the_schema_is_registered() -> None:
    keys = {a.key for a in registry.ANALYSES.values() if a.key is not None}
    assert keys == set(SCHEMA["properties"]["analyses"]["properties"])


def test_schema_products_are_the_dumps_products() -> None:
    dumps = dumps_module()
    extract = SCHEMA["properties"]["extract"]["properties"]["products"]
    dataset = SCHEMA["properties"]["datasets"]["additionalProperties"]["properties"]["products"]
    assert tuple(extract["items"]["enum"]) == dumps.PRODUCTS
    assert tuple(dataset["items"]["enum"]) == dumps.PRODUCTS
    assert tuple(extract["default"]) == dumps.DEFAULT_PRODUCTS
    raw = (REPO / "workflow/schemas/config.schema.yaml").read_text()
    assert "cls_attention" not in raw, "the schema names no product: load_schema fills them in"


def test_a_registered_layout_is_a_product_of_the_schema(monkeypatch) -> None:
    """Adding a dump product needs no schema edit: the loaded schema takes the dumps' list."""
    dumps = dumps_module()
    monkeypatch.setattr(dumps, "PRODUCTS", (*dumps.PRODUCTS, "toy_norms"))
    schema = configcheck.load_schema(REPO / "workflow/schemas/config.schema.yaml")
    assert schema["properties"]["extract"]["properties"]["products"]["items"]["enum"][-1] == "toy_norms"
    def config(products: list[str]) -> dict[str, Any]:
        return {"models": {"m": {"arch": "test_vit"}}, "datasets": {"d": {"kind": "synthetic", "products": products}}}

    configcheck.validate(config(["toy_norms"]), schema)
    with pytest.raises(ConfigError, match="toy_nrms"):
        configcheck.validate(config(["toy_nrms"]), schema)


def test_unknown_schema_fill_is_an_error(tmp_path) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text("type: object\nproperties:\n  x: {type: string, x-vitscope: colours}\n")
    with pytest.raises(ConfigError, match="unknown x-vitscope: 'colours'"):
        configcheck.load_schema(path)


def test_every_rule_is_registered_or_a_plot_or_target_rule() -> None:
    classes = registry.rule_classes()
    for rule in rule_chunks():
        assert rule in classes or rule in registry.local_rules(), f"rule {rule}: register it (Analysis.rules)"
    assert set(classes) <= set(rule_chunks()), set(classes) - set(rule_chunks())
    assert set(registry.local_rules()) <= set(rule_chunks())


def test_model_rules_declare_the_model_resources() -> None:
    for rule, text in rule_chunks().items():
        declares = "gpu=model_gpus" in text and "runtime=model_runtime" in text and "mem_mb=model_mem_mb" in text
        assert declares == (registry.rule_classes().get(rule) == registry.MODEL), rule


def test_every_figure_has_its_plot_rule_outputs_and_caption() -> None:
    chunks = rule_chunks()
    for name, (_, figure) in registry.figures().items():
        text = chunks[figure.plot_rule]
        assert f'figure_report("{figure.report_path}", "{name}")' in text or (
            figure.directory and f'figure_report(directory("{figure.path}"), "{name}")' in text
        ), name
        if not figure.directory:
            assert f'"{figure.path}.pdf"' in text, name
        for path in figure.numbers_paths:  # the CSV beside the figure is a report entry too
            assert f'figure_report("{path}", "{name}")' in text, name
        assert (REPO / "workflow/report" / f"{figure.caption_name}.rst").is_file(), name
    for text in chunks.values():  # every CSV a plot rule writes beside its figure is registered
        for csv in re.findall(r'"(results/figures/[^"]+\.csv)"', text):
            assert f'figure_report("{csv}"' in text, csv
    for name, (analysis, table) in registry.report_tables().items():
        text = "".join(chunks[rule] for rule in analysis.rules)
        for path in table.report_paths:
            assert f'figure_report("{path}", "{name}")' in text and path in analysis.tables, path
        assert (REPO / "workflow/report" / f"{table.caption_name}.rst").is_file(), name
    assert (REPO / "workflow/report" / f"{registry.NUMBERS_CAPTION}.rst").is_file()
    assert not [r for r in chunks if r.startswith("plot_") and r not in registry.local_rules()]


def test_slurm_profile_groups_are_the_registrys() -> None:
    """profiles/slurm/config.yaml's groups: `python -m vitscope.workflow.registry` prints what they must be."""
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    grouped = dict(entry.split("=") for entry in profile["groups"])
    components = {g: int(n) for g, n in (entry.split("=") for entry in profile["group-components"])}
    expected = registry.slurm_profile_lines()
    assert grouped == registry.slurm_groups(), f"write into profiles/slurm/config.yaml:\n{expected}"
    assert components == registry.GROUP_COMPONENTS, f"write into profiles/slurm/config.yaml:\n{expected}"
    assert expected in (REPO / "profiles/slurm/config.yaml").read_text()
    assert not set(grouped) & set(registry.local_rules())  # a grouped rule cannot be local


# --------------------------------------------------------------------------- what it derives


def test_demo_targets() -> None:
    config = demo()
    targets = registry.targets(config)
    assert len(targets) == len(set(targets))
    models = list(config["models"])
    for path in [
        *(f"results/figures/cls_maps/{m}/demo.pdf" for m in models),
        "results/figures/attention_distance/demo.pdf",
        "results/figures/attention_distance/demo_heads.pdf",
        "results/tables/offset_heads/demo.csv",
        "results/figures/attention_grids/fs/demo",
        "results/figures/cka_full/demo/fs/fs.pdf",
        "results/figures/cka_full/demo/fs/random.pdf",
        "results/figures/clustering/demo_ari.pdf",
        "results/figures/knn/demo_val.pdf",
        "results/figures/davis/demo_davis.pdf",
        "results/tables/best_layers.md",
        "results/figures/train/loss.png",
    ]:
        assert path in targets, path
    assert "results/figures/cka_full/demo/random/fs.pdf" not in targets  # unordered pairs
    assert len([t for t in targets if t.startswith("results/figures/cka_full/")]) == 10  # 4 models: 10 pairs


def test_nothing_runs_without_datasets_or_trained_models() -> None:
    config = demo()
    for analysis in config["analyses"].values():
        analysis.pop("datasets", None)
    assert registry.targets(config) == ["results/figures/train/loss.pdf", "results/figures/train/loss.png"]
    for entry in config["models"].values():
        entry.pop("train")
    assert registry.targets(config) == []
    assert set(registry.target_rules(config)) >= {"fig_cls_maps", "fig_cka", "table_best_layers", "fig_knn"}
    assert not any(registry.target_rules(config).values())


def test_target_rules() -> None:
    config = demo()
    rules = registry.target_rules(config)
    assert set(rules) == {
        "fig_cls_maps", "fig_attention_distance", "fig_aaam", "fig_offsets", "fig_offset_heads", "fig_offset_scatter",
        "fig_cls_heads", "fig_saliency_iou", "fig_attention_grids", "fig_cka", "fig_cka_full", "fig_cka_last",
        "fig_clustering", "fig_object_clustering", "fig_knn", "fig_retrieval", "fig_spair", "fig_davis",
        "table_best_layers", "fig_train_loss",
    }
    assert rules["fig_attention_distance"] == [
        "results/figures/attention_distance/demo.pdf", "results/figures/attention_distance/demo_heads.pdf"
    ]
    assert set(rules["fig_cka"]) == set(rules["fig_cka_full"]) | set(rules["fig_cka_last"])
    assert rules["table_best_layers"] == [f"results/tables/best_layers.{e}" for e in ("csv", "md", "tex", "html")]
    assert rules["fig_spair"] == ["results/figures/spair/demo_spair.pdf"]
    assert set(registry.targets(config)) == {f for files in rules.values() for f in files} | {
        "results/tables/offset_heads/demo.csv"
    }


def test_best_layers_runs_with_any_downstream_task() -> None:
    config = demo()
    for task in ("knn", "retrieval", "spair"):
        config["analyses"][task]["datasets"] = []
    assert registry.target_rules(config)["table_best_layers"]  # davis still runs
    config["analyses"]["davis"]["datasets"] = []
    assert registry.target_rules(config)["table_best_layers"] == []


def test_report_entries() -> None:
    assert registry.report_entry("cls_maps", "results/figures/cls_maps/{model}/{dataset}.png") == {
        "caption": "cls_maps", "category": registry.ATTENTION, "subcategory": "cls maps",
        "labels": {"figure": "cls maps", "model": "{model}", "dataset": "{dataset}"}, "patterns": [],
    }
    heads = registry.report_entry("attention_distance_heads", "results/figures/attention_distance/{dataset}_heads.png")
    assert heads["caption"] == "attention_distance" and heads["labels"]["model"] == "all"
    cka = registry.report_entry("cka_full", "results/figures/cka_full/{dataset}/{model_a}/{model_b}.png")
    assert cka["category"] == registry.FEATURES
    assert cka["labels"] == {"figure": "cka full", "model": "{model_a} vs {model_b}", "dataset": "{dataset}",
                             "file": "figure"}  # a CSV of numbers lies beside it
    clustering = registry.report_entry("clustering", "results/figures/clustering/{dataset}_{metric}.png")
    assert clustering["labels"] == {
        "figure": "clustering", "model": "all", "dataset": "{dataset}", "metric": "{metric}", "file": "figure"
    }
    grids = registry.report_entry("attention_grids", "results/figures/attention_grids/{model}/{dataset}")
    assert grids["patterns"] == ["{image}.png"]
    assert grids["labels"] == {
        "figure": "attention grids", "model": "{model}", "dataset": "{dataset}", "image": "{image}"
    }
    task = registry.report_entry("{task}", "results/figures/{task}/{dataset}.png")
    assert task["caption"] == "downstream" and task["category"] == registry.DOWNSTREAM
    assert task["labels"] == {"figure": "{task}", "model": "all", "dataset": "{dataset}", "file": "figure"}
    numbers = registry.report_entry("{task}", "results/figures/{task}/{dataset}.csv")  # its CSV, same place
    assert numbers["caption"] == registry.NUMBERS_CAPTION and numbers["subcategory"] == task["subcategory"]
    assert numbers["labels"] == {**task["labels"], "file": "numbers (CSV)"} and numbers["category"] == task["category"]
    best = registry.report_entry("best_layers", "results/tables/best_layers.html")
    assert best == {"caption": "best_layers", "category": registry.DOWNSTREAM, "subcategory": "best layers",
                    "labels": {"table": "best layers", "file": "table"}, "patterns": []}
    assert registry.report_entry("best_layers", "results/tables/best_layers.csv")["labels"]["file"] == "numbers (CSV)"
    loss = registry.report_entry("train_loss", "results/figures/train/loss.png")
    assert loss["category"] == registry.TRAINING and loss["labels"] == {"figure": "train loss", "model": "all"}


def test_report_categories_are_numbered_from_1_in_menu_order() -> None:
    """The report's menu sorts the category names: the numbers give the study's order."""
    assert [c.split(". ", 1)[0] for c in registry.CATEGORIES] == ["1", "2", "3", "4"]
    assert sorted(registry.CATEGORIES) == list(registry.CATEGORIES)
    assert {a.category for a in registry.ANALYSES.values()} == set(registry.CATEGORIES)


def test_report_entry_refuses_an_unknown_figure_or_path() -> None:
    with pytest.raises(ConfigError, match="no figure or table 'nope' is registered"):
        registry.report_entry("nope", "results/figures/nope.png")
    with pytest.raises(ConfigError, match="figure 'cls_maps' is registered at 'results/figures/cls_maps/"):
        registry.report_entry("cls_maps", "results/figures/cls_map/{model}/{dataset}.png")


def test_tasks_and_local_rules() -> None:
    assert registry.tasks() == ["knn", "retrieval", "spair", "davis"]
    assert "plot_downstream" in registry.local_rules() and "plot_attention_distance" in registry.local_rules()
    assert len(registry.local_rules()) == 15


@pytest.fixture
def scratch(monkeypatch):
    """The registry, restored after the test."""
    monkeypatch.setattr(registry, "ANALYSES", dict(registry.ANALYSES))
    monkeypatch.setattr(registry, "OTHER_RULES", dict(registry.OTHER_RULES))


def test_register_refuses_duplicates_and_unknown_classes(scratch) -> None:
    with pytest.raises(ConfigError, match="analysis knn is registered twice"):
        registry.register(registry.Analysis("knn", registry.DOWNSTREAM))
    with pytest.raises(ConfigError, match="rule clustering already belongs to another analysis"):
        registry.register(registry.Analysis("x", registry.FEATURES, rules={"clustering": registry.TABLES}))
    with pytest.raises(ConfigError, match="Slurm class 'gpu'"):
        registry.register(registry.Analysis("x", registry.FEATURES, rules={"x": "gpu"}))
    with pytest.raises(ConfigError, match="figure cls_maps is registered already"):
        registry.register(registry.Analysis("x", registry.FEATURES, figures=(registry.Figure("cls_maps", "a/b"),)))
    with pytest.raises(ConfigError, match="report table best_layers is registered already"):
        registry.register(registry.Analysis("x", registry.DOWNSTREAM,
                                            report=(registry.ReportTable("best_layers", "results/x"),)))
    with pytest.raises(ConfigError, match="rule extract"):
        registry.register_rules({"extract": registry.MODEL})


def test_a_registered_analysis_gets_targets_a_target_rule_a_report_entry_and_a_group(scratch) -> None:
    registry.register(registry.Analysis(
        "norms", registry.ATTENTION,
        figures=(registry.Figure("norms", "results/figures/norms/{model}/{dataset}"),),
        rules={"norms": registry.TABLES},
        config="cls_maps",
    ))
    config = demo()
    assert "results/figures/norms/fs/demo.pdf" in registry.targets(config)
    assert len(registry.target_rules(config)["fig_norms"]) == len(config["models"])
    entry = registry.report_entry("norms", "results/figures/norms/{model}/{dataset}.png")
    assert entry["category"] == registry.ATTENTION
    assert "plot_norms" in registry.local_rules() and registry.slurm_groups()["norms"] == registry.TABLES


def test_a_pattern_with_an_unknown_wildcard_is_refused() -> None:
    analysis = registry.Analysis("x", registry.FEATURES, config="cls_maps")
    with pytest.raises(ConfigError, match=r"pattern 'results/\{block\}/\{dataset\}.pdf' has wildcards"):
        analysis.expand("results/{block}/{dataset}.pdf", demo())
    config = copy.deepcopy(demo())
    assert analysis.expand("results/{task}/{dataset}.pdf", config) == ["results/x/demo.pdf"]


def test_planning_modules_import_no_torch() -> None:
    """The rule files import these at every Snakemake start: torch (seconds) and h5py must not come with them."""
    import subprocess
    import sys

    modules = "checks, configcheck, lookups, registry, resources, stamps, versions"
    code = f"import sys; from vitscope.workflow import {modules}; print(sorted({{'torch', 'h5py'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- the captions as the report renders them


def rendered_captions() -> dict[str, str]:
    """Every caption (each downstream task's branch, the CSV of numbers, the tables, the front page)
    rendered as Snakemake's report renders it: Jinja with trim_blocks and lstrip_blocks (a block tag
    eats the line break after it), then docutils to HTML."""
    from types import SimpleNamespace

    import jinja2
    from docutils.core import publish_parts

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # snakemake.report's settings

    def render(caption: str, wildcards: dict[str, str], output: list[str]) -> str:
        text = (REPO / "workflow/report" / f"{caption}.rst").read_text()
        snakemake = SimpleNamespace(wildcards=SimpleNamespace(**wildcards), output=output, config=demo())
        return publish_parts(env.from_string(text).render(snakemake=snakemake), writer_name="html")["body"]

    found = {"workflow": render("workflow", {}, [])}
    for name, (_, figure) in registry.figures().items():
        fields = set(re.findall(r"\{(\w+)\}", figure.report_path + "".join(figure.patterns)))
        for task in registry.tasks() if name == "{task}" else [name]:
            wildcards = {f: f"x_{f}" for f in fields} | {"task": task}
            png = figure.report_path.format(**wildcards)
            found[f"{task}"] = render(figure.caption_name, wildcards, [png])
            if figure.numbers:
                found[f"{task} numbers"] = render(registry.NUMBERS_CAPTION, wildcards, [png])
    for name, (_, table) in registry.report_tables().items():
        found[name] = render(table.caption_name, {}, table.report_paths)
    return found


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # docutils on writer_name, as Snakemake calls it
def test_captions_do_not_run_sentences_or_words_together() -> None:
    """A sentence end or a literal followed by a letter without a space ("section 5).The") is text
    joined across a line break a template tag removed, or across two files."""
    for name, page in rendered_captions().items():
        words = re.sub(r"<[^>]+>", "", page)
        assert not re.findall(r"[\w)\]]\.[A-Z]\w*", words), (name, re.findall(r"\S+[\w)\]]\.[A-Z]\S*", words))
        assert not re.findall(r"</(?:code|strong|em)>[A-Za-z(]", page), (name, page)
        assert "snakemake.wildcards" not in words and "{{" not in words, name
    numbers = rendered_captions()["knn numbers"]
    assert "results/figures/knn/x_dataset.png" in numbers


#: how the front page (workflow/report/workflow.rst) names each registered analysis
FRONT_PAGE_NAMES = {
    "cls_maps": "CLS maps", "attention_distance": "attention distance", "offset_heads": "offset-local heads",
    "cls_heads": "CLS heads", "saliency": "CLS-attention saliency", "attention_grids": "attention grids",
    "cka": "CKA", "clustering": "KMeans", "object_clustering": "object features", "knn": "k-NN classification",
    "retrieval": "image retrieval", "spair": "SPair-71k", "davis": "DAVIS-2017", "best_layers": "best-layer table",
    "train": "training loss",
}


def test_the_front_page_names_every_analysis_in_its_category() -> None:
    """Each category's bullet on the report's front page names every analysis the registry runs in it."""
    assert set(FRONT_PAGE_NAMES) == set(registry.ANALYSES), "name the new analysis on the front page"
    text = (REPO / "workflow/report/workflow.rst").read_text()
    bullets = {m.group(1): " ".join(m.group(2).split()) for m in re.finditer(r"^- \*\*(\d)\. (.*?)(?=^\S|\Z)", text,
                                                                                  flags=re.M | re.S)}
    for name, analysis in registry.ANALYSES.items():
        number = analysis.category.split(".")[0]
        assert FRONT_PAGE_NAMES[name] in bullets[number], (name, bullets[number])
