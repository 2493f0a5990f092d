"""Config hygiene (vitscope.workflow.configcheck): careless config files fail early, naming the key."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from vitscope.errors import ConfigError
from vitscope.workflow import configcheck

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "workflow/schemas/config.schema.yaml"
SCHEMA = configcheck.load_schema(SCHEMA_PATH)


@pytest.fixture(scope="module")
def filled_schema(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The schema as configcheck loads it (the package's product lists filled in), as a file for Snakemake."""
    path = tmp_path_factory.mktemp("schema") / "config.schema.yaml"
    path.write_text(yaml.safe_dump(SCHEMA))
    return str(path)
CONFIGS = [REPO / "config.yaml", *sorted((REPO / "configs").glob("*.yaml"))]


def demo() -> dict[str, Any]:
    """The embedded demo's config, as Snakemake reads it (no defaults yet)."""
    return yaml.safe_load((REPO / "config.yaml").read_text())


def prepared() -> dict[str, Any]:
    config = demo()
    configcheck.prepare(config, SCHEMA)
    return config


def error_of(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        configcheck.prepare(config, SCHEMA)
    return str(info.value)


# --------------------------------------------------------------------------- the shipped configs


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_pass_every_check(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    configcheck.prepare(config, SCHEMA, files=[path])
    assert config["figures"]["dpi"] == 150  # defaults filled in


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_defaults_are_those_of_snakemake_validate(path: Path, filled_schema: str) -> None:
    from snakemake.utils import validate

    ours, theirs = yaml.safe_load(path.read_text()), yaml.safe_load(path.read_text())
    configcheck.validate(ours, SCHEMA)
    validate(theirs, filled_schema, set_default=True)
    assert ours == theirs


def test_defaults_inside_given_and_defaulted_objects_match_snakemake(filled_schema: str) -> None:
    """Nested defaults: inside an object given empty, inside an object the schema defaults, none in an absent one."""
    from snakemake.utils import validate

    minimal = {
        "models": {"m": {"arch": "test_vit", "train": {"objective": "random"}}},
        "datasets": {"s": {"kind": "synthetic", "synthetic": {}}, "c": {"kind": "coco"}, "t": {"kind": "synthetic"}},
        "analyses": {"best_layers": {}},
    }
    ours, theirs = copy.deepcopy(minimal), copy.deepcopy(minimal)
    configcheck.validate(ours, SCHEMA)
    validate(theirs, filled_schema, set_default=True)
    assert ours == theirs
    assert ours["datasets"]["s"]["synthetic"]["per_class"] == 12 and "synthetic" not in ours["datasets"]["t"]
    assert ours["analyses"]["best_layers"]["knn"] == {"metric": "top1", "k": 20}
    assert ours["analyses"]["davis"]["short_side"] == 448 and ours["models"]["m"]["train"]["steps"] == 300
    # a default is copied, never shared between two entries
    ours["datasets"]["s"]["synthetic"]["davis_sequences"].append("x")
    assert SCHEMA["properties"]["datasets"]["additionalProperties"]["properties"]["synthetic"]["properties"][
        "davis_sequences"
    ]["default"] == []


# --------------------------------------------------------------------------- 1. duplicate keys


def test_a_duplicate_model_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "models:\n"
        "  dino: {arch: vit_base_patch16_224}\n"
        "  mae: {arch: vit_base_patch16_224}\n"
        "  dino: {arch: vit_small_patch16_224}\n"
        "datasets:\n"
        "  d: {kind: synthetic}\n"
    )
    with pytest.raises(ConfigError, match=re.escape(f"{path} line 4: models.dino is given twice (lines 2 and 4)")):
        configcheck.check_duplicate_keys(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("extract:\n  batch_size: 8\n  batch_size: 16\n", "x.yaml line 3: extract.batch_size is given twice"),
        ("a: 1\nb: 2\na: 3\n", "x.yaml line 3: a is given twice (lines 1 and 3)"),
        ("datasets:\n  d:\n    synthetic: {seed: 1, seed: 2}\n",
         "datasets.d.synthetic.seed is given twice (both on line 3)"),
        ("l:\n  - {k: 1}\n  - {k: 1, j: 2, k: 3}\n", "x.yaml line 3: l[1].k is given twice"),
        ("a: &base {x: 1}\nb:\n  <<: *base\n  y: 2\n  y: 3\n", "x.yaml line 5: b.y is given twice (lines 4 and 5)"),
    ],
)
def test_duplicate_keys_anywhere_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        configcheck.check_duplicate_keys("x.yaml", text)


def test_merge_keys_and_repeated_names_elsewhere_are_not_duplicates() -> None:
    configcheck.check_duplicate_keys("x.yaml", "a: &base {x: 1, y: 1}\nb:\n  <<: *base\n  x: 2\nc: {x: 1}\n")
    configcheck.check_duplicate_keys(REPO / "config.yaml")  # anchors, merges and overrides
    configcheck.check_duplicate_keys("x.yaml", "a: [unclosed\n")  # not YAML: Snakemake's reader says so


def test_prepare_checks_every_file_it_is_given(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text((REPO / "config.yaml").read_text())
    text = (REPO / "config.yaml").read_text()
    bad.write_text(text.replace("  num_workers: 0\n", "  num_workers: 0\n  device: cpu\n"))
    configcheck.prepare(demo(), SCHEMA, files=[good])
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: extract.device is given twice"):
        configcheck.prepare(demo(), SCHEMA, files=[good, bad])


# --------------------------------------------------------------------------- 2. integers refuse floats


def _schema_nodes(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(path, node) of every schema node: '.key' for properties, '.*' for additionalProperties, '[]' for items."""
    out = [(path, schema)]
    for branch in [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]:
        if branch is not schema:
            out += [(p, n) for p, n in _schema_nodes(branch, path)]
        for key, sub in branch.get("properties", {}).items():
            out += _schema_nodes(sub, f"{path}.{key}" if path else key)
        if isinstance(branch.get("additionalProperties"), dict):
            out += _schema_nodes(branch["additionalProperties"], f"{path}.*")
        if isinstance(branch.get("items"), dict):
            out += _schema_nodes(branch["items"], f"{path}[]")
    return out


def _types(node: dict[str, Any]) -> set[str]:
    declared = node.get("type", [])
    return {declared} if isinstance(declared, str) else set(declared)


INTEGER_PATHS = sorted({p for p, n in _schema_nodes(SCHEMA) if "integer" in _types(n) and "number" not in _types(n)})


def _set(config: dict[str, Any], path: str, value: Any) -> str:
    """Put ``value`` at the schema path ``path`` of ``config`` ('*' = the first entry); the dotted key it went to."""
    parts = re.findall(r"[^.\[\]]+|\[\]", path)
    node, where = config, []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "*":
            part = next(iter(node))
        if part == "[]":
            continue
        if last or parts[i + 1] == "[]":
            node[part] = [value, value] if not last else value
            where.append(part + ("[0]" if not last else ""))
            return ".".join(where)
        node = node.setdefault(part, {})
        where.append(part)
    raise AssertionError(path)


def test_the_schema_has_integers_everywhere_we_think() -> None:
    assert {"extract.batch_size", "figures.dpi", "models.*.image_size", "models.*.image_size[]", "analyses.knn.ks[]",
            "analyses.spair.pairs_per_category", "models.*.train.steps"} <= set(INTEGER_PATHS)


@pytest.mark.parametrize("path", INTEGER_PATHS)
def test_every_integer_key_refuses_a_float(path: str) -> None:
    node = dict(_schema_nodes(SCHEMA))[path]
    low = max(node.get("minimum", 1), 8 if "image_size" in path else 1, 2 if "max_images" in path else 1)
    config = json.loads(json.dumps(prepared()))  # unshared: the demo's models share one model_kwargs (an anchor)
    key = _set(config, path, float(low))
    message = error_of(config)
    assert message.startswith(f"{key} = {float(low)!r}: must be")
    assert "integer" in message.splitlines()[0]


def test_an_integer_float_gets_a_hint() -> None:
    config = demo()
    config["extract"]["batch_size"] = 4.0
    first = error_of(config).splitlines()[0]
    assert first == "extract.batch_size = 4.0: must be an integer (write 4 without the '.0') (type)"


# --------------------------------------------------------------------------- 3. image size vs patch


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"arch": "vit_small_patch8_224", "image_size": 60},
         "models.m.image_size = 60 is not a multiple of the model's patch 8 (models.m.arch = 'vit_small_patch8_224')"),
        ({"arch": "vit_base_patch16_224", "image_size": [224, 200]}, "models.m.image_size = [224, 200] is not a"),
        ({"family": "mae", "size": "H/14", "checkpoint": "w.pth", "image_size": 220},
         "patch 14 (models.m.size = 'H/14')"),
        ({"arch": "vit_small_patch8_224", "model_kwargs": {"patch_size": 12}},
         "models.m.image_size = 224 (the default) is not a multiple of the model's patch 12 "
         "(models.m.model_kwargs.patch_size = 12)"),
    ],
)
def test_an_image_size_off_the_patch_is_refused(entry: dict[str, Any], message: str) -> None:
    config = demo()
    config["models"] = {"m": entry}
    assert message in error_of(config)


def test_image_sizes_on_the_patch_and_unknown_patches_pass() -> None:
    config = demo()
    config["models"] = {
        "a": {"arch": "vit_small_patch8_224", "image_size": [64, 96]},
        "b": {"family": "clip", "size": "L/14", "checkpoint": "w.pt"},  # 224 = 16 x 14
        "c": {"arch": "test_vit", "image_size": 50},  # no patch in the name: left to vitscope.models.registry.create
        "d": {"arch": "vit_small_patch8_224", "model_kwargs": {"patch_size": 10}, "image_size": 60},
    }
    config["analyses"]["spair"]["image_size"] = None  # the demo's 128 px canvas fits patch 8 only
    configcheck.prepare(config, SCHEMA)


def test_spair_image_size_must_suit_every_model() -> None:
    config = demo()
    config["analyses"]["spair"]["image_size"] = 100
    assert error_of(config).startswith("analyses.spair.image_size = 100 is not a multiple of the patch 8 of models.fs")
    config = demo()
    config["analyses"]["spair"].update(image_size=100, datasets=[])  # no SPair run: nothing built for it
    configcheck.prepare(config, SCHEMA)


# --------------------------------------------------------------------------- 4. bounds


def test_every_unbounded_number_is_listed_with_its_reason() -> None:
    unbounded = {
        path
        for path, node in _schema_nodes(SCHEMA)
        if _types(node) & {"integer", "number"} and "maximum" not in node and "exclusiveMaximum" not in node
    }
    assert unbounded == set(configcheck.UNBOUNDED)


@pytest.mark.parametrize(
    ("path", "too_big"),
    [("figures.dpi", 20000), ("extract.batch_size", 100000), ("extract.exemplars", 1000),
     ("models.*.image_size", 2240), ("analyses.davis.short_side", 4480), ("datasets.*.synthetic.per_class", 10**6),
     ("analyses.knn.query_chunk", 10**6)],
)
def test_sizes_that_would_exhaust_memory_or_time_are_refused(path: str, too_big: int) -> None:
    config = json.loads(json.dumps(prepared()))
    key = _set(config, path, too_big)
    assert error_of(config).startswith(f"{key} = {too_big}: must be")


def test_dpi_up_to_1200_passes() -> None:
    config = demo()
    config["figures"] = {"dpi": 1200}
    configcheck.prepare(config, SCHEMA)


# --------------------------------------------------------------------------- 5. names with a line break


def test_every_schema_pattern_refuses_a_trailing_line_break() -> None:
    patterns = [node["pattern"] for _, node in _schema_nodes(SCHEMA) if "pattern" in node]
    patterns += [node["propertyNames"]["pattern"] for _, node in _schema_nodes(SCHEMA) if "propertyNames" in node]
    assert len(patterns) == 10  # every name that becomes a path component, extract.device and analyses.knn.device
    for pattern in patterns:
        sample = "cuda:1" if "cuda" in pattern else "a1"
        assert re.search(pattern, sample), pattern
        assert not re.search(pattern, sample + "\n"), pattern


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda c: c["models"].__setitem__("fs2\n", c["models"]["random"]), "models has the name 'fs2\\n'"),
        (lambda c: c["datasets"].__setitem__("demo\n", {"kind": "imagefolder"}), "datasets has the name 'demo\\n'"),
        (lambda c: c["datasets"]["demo_retrieval"].update(name="rshapes\n"),
         "datasets.demo_retrieval.name = 'rshapes\\n'"),
        (lambda c: c["datasets"]["demo_spair"].update(split="test\n"), "datasets.demo_spair.split = 'test\\n'"),
        (lambda c: c["datasets"]["demo_davis"].update(resolution="480p\n"), "datasets.demo_davis.resolution"),
        (lambda c: c["datasets"]["demo_davis"].update(sequences=["one-shape\n"]), "datasets.demo_davis.sequences[0]"),
        (lambda c: c["datasets"]["demo"]["synthetic"].update(retrieval_name="r\n"),
         "synthetic.retrieval_name = 'r\\n'"),
        (lambda c: c["datasets"]["demo"]["synthetic"].update(davis_sequences=["a\n"]), "synthetic.davis_sequences[0]"),
    ],
)
def test_names_with_a_line_break_are_refused(change, key: str) -> None:
    config = demo()
    change(config)
    assert key in error_of(config)  # by the schema's patterns
    config = prepared()
    change(config)
    with pytest.raises(ConfigError, match=re.escape(key)):  # and by the check itself
        configcheck.check_names(config)


def test_device_with_a_line_break_is_refused() -> None:
    config = demo()
    config["extract"]["device"] = "cpu\n"
    assert error_of(config).startswith("extract.device = 'cpu\\n': must match")


# --------------------------------------------------------------------------- 6. names that collide


def _reserved_from_rules(wildcard: str) -> set[str]:
    """Literal endings X such that '<prefix>{w}X<rest>' and '<prefix>{w}<rest>' are both path patterns of the rules."""
    text = "\n".join(path.read_text() for path in sorted((REPO / "rules").glob("*.smk")))
    text = text.replace("{{", "{").replace("}}", "}")
    braced = "{" + wildcard + "}"
    patterns = set(re.findall(r"""["'](results/[^"']*""" + re.escape(braced) + r"""[^"']*)["']""", text))
    found = set()
    for p in patterns:
        for q in patterns:
            head_p, _, rest_p = p.partition(braced)
            head_q, _, rest_q = q.partition(braced)
            if head_p == head_q and rest_p != rest_q and rest_p.endswith(rest_q):
                extra = rest_p[: len(rest_p) - len(rest_q)]
                if re.fullmatch(r"[A-Za-z0-9_.-]+", extra):
                    found.add(extra)
    return found


def test_reserved_suffixes_are_those_the_rules_make() -> None:
    assert _reserved_from_rules("dataset") == set(configcheck.RESERVED_SUFFIXES)
    for wildcard in ("model", "model_a", "model_b"):
        assert _reserved_from_rules(wildcard) == set()


def test_a_dataset_and_its_heads_twin_are_refused_naming_both() -> None:
    config = demo()
    config["datasets"]["demo_heads"] = {"kind": "synthetic"}
    message = error_of(config)
    assert message.startswith("datasets.demo_heads: a dataset name may not end in '_heads'")
    assert "'results/figures/attention_distance/demo_heads.pdf'" in message and "of dataset 'demo'" in message


def test_a_heads_dataset_alone_is_refused_too() -> None:
    config = demo()
    config["datasets"]["solo_heads"] = {"kind": "synthetic"}
    assert "a dataset 'solo' (Snakemake then looks for it)" in error_of(config)


def test_clustering_metric_endings_do_not_collide() -> None:
    config = demo()
    config["datasets"]["demo_purity"] = {"kind": "synthetic"}
    config["analyses"]["clustering"]["datasets"] = ["demo", "demo_purity"]
    configcheck.prepare(config, SCHEMA)


@pytest.mark.parametrize("section", ["models", "datasets"])
def test_names_differing_only_in_case_are_refused(section: str) -> None:
    config = prepared()
    first = next(iter(config[section]))
    config[section][first.upper()] = config[section][first]
    with pytest.raises(ConfigError, match=f"{section}.{first} and {section}.{first.upper()} differ only in case"):
        configcheck.check_collisions(config)


# --------------------------------------------------------------------------- 7. --config overrides


def _cli(value: str) -> Any:
    """A nested ``--config key=value`` as Snakemake 8/9 reads it (snakemake.cli.parse_config: YAML's BaseLoader)."""
    return yaml.load(value, Loader=yaml.BaseLoader)


def test_nested_config_overrides_get_the_schemas_types() -> None:
    overrides = {
        "extract": _cli("{batch_size: 8, device: cpu, parity_tolerance: 0.01}"),
        "analyses": _cli("{knn: {ks: [5, 20], train: demo}, spair: {pairs_per_category: null, renormalize: true}}"),
        "models": _cli("{fs: {image_size: [64, 64], seed: 3}}"),
        "datasets": _cli("{demo_spair: {split: '123'}}"),
    }
    assert overrides["extract"]["batch_size"] == "8"  # what Snakemake leaves
    coerced = configcheck.coerce_overrides(overrides, SCHEMA)
    assert coerced["extract"] == {"batch_size": 8, "device": "cpu", "parity_tolerance": 0.01}
    assert coerced["analyses"]["knn"] == {"ks": [5, 20], "train": "demo"}
    assert coerced["analyses"]["spair"] == {"pairs_per_category": None, "renormalize": True}
    assert coerced["models"]["fs"] == {"image_size": [64, 64], "seed": 3}
    assert coerced["datasets"]["demo_spair"]["split"] == "123"  # a string key keeps its string


def test_prepare_applies_the_overrides_to_the_merged_config() -> None:
    config = demo()
    overrides = {"extract": _cli("{batch_size: 8}"), "figures": _cli("{dpi: 80}")}
    config["extract"].update(overrides["extract"])  # Snakemake merges them in before the Snakefile runs
    config["figures"] = dict(overrides["figures"])
    configcheck.prepare(config, SCHEMA, overrides=overrides)
    assert config["extract"]["batch_size"] == 8 and config["extract"]["cka_batch_size"] == 16
    assert config["figures"]["dpi"] == 80


def test_bad_overrides_are_still_refused() -> None:
    for value, hint in (("{batch_size: 8.0}", "write 8 without"), ("{batch_size: eight}", "got a string")):
        config = demo()
        overrides = {"extract": _cli(value)}
        config["extract"].update(overrides["extract"])
        with pytest.raises(ConfigError, match=re.escape(hint)):
            configcheck.prepare(config, SCHEMA, overrides=overrides)


# --------------------------------------------------------------------------- 8. short schema errors


@pytest.mark.parametrize(
    ("change", "first_line"),
    [
        (lambda c: c["extract"].update(batch_size=0), "extract.batch_size = 0: must be >= 1 (minimum)"),
        (lambda c: c.update(figure={"dpi": 100}),
         "the config: unknown key 'figure' (did you mean 'figures'?); known keys: analyses, datasets, estimate, "
         "extract, figures, models (additionalProperties)"),
        (lambda c: c["extract"].update(batchsize=3), "extract: unknown key 'batchsize' (did you mean 'batch_size'?)"),
        (lambda c: c["models"]["fs"].update(weights="pretrained"),
         "models.fs.weights = 'pretrained': must be one of timm, checkpoint, random (enum)"),
        (lambda c: c["models"]["fs"]["train"].update(objective="dino"), "models.fs.train.objective = 'dino': must be"),
        (lambda c: c["extract"].update(precision="fp64"),
         "extract.precision = 'fp64': must be one of fp32, tf32, bf16, fp16 (enum)"),
        (lambda c: c["datasets"]["demo"].pop("kind"), "datasets.demo: missing key 'kind' (required)"),
        (lambda c: c["analyses"]["knn"].update(ks=[]), "analyses.knn.ks = []: must have at least 1 items (minItems)"),
        (lambda c: c["analyses"]["knn"].update(ks=[5, 5]), "analyses.knn.ks = [5, 5]: must not repeat an item"),
        (lambda c: c["models"]["fs"].update(image_size=4), "models.fs.image_size = 4: must be >= 8 (minimum)"),
        (lambda c: c["analyses"]["saliency"].update(mass=0), "analyses.saliency.mass = 0: must be > 0"),
        (lambda c: c.update(models={}), "models: must have at least 1 entry (minProperties)"),
    ],
)
def test_schema_errors_are_a_line_or_two(change, first_line: str) -> None:
    config = demo()
    change(config)
    lines = error_of(config).splitlines()
    assert lines[0].startswith(first_line)
    assert len(lines) <= 2 and all(len(line) <= 320 for line in lines)


def test_the_schemas_precisions_are_the_packages() -> None:
    """``extract.precision``'s enum (written out in the schema, for its readers) is
    :data:`vitscope.io.dumps.PRECISIONS`, fp32 first and the default."""
    from vitscope.io import dumps

    node = SCHEMA["properties"]["extract"]["properties"]["precision"]
    assert tuple(node["enum"]) == dumps.PRECISIONS
    assert node["default"] == dumps.PRECISIONS[0] == "fp32"
