"""Config hygiene: what the Snakefile runs on the config before any rule reads it.

:func:`prepare` is called once, from the Snakefile, right after the config file is
loaded. In order it

1. re-reads every config file Snakemake loaded and refuses a key given twice in one
   mapping (YAML keeps the last one silently): :func:`check_duplicate_keys`;
2. turns the strings that ``--config key=value`` leaves in nested values back into the
   numbers, booleans and nulls the schema asks for: :func:`coerce_overrides`;
3. validates against ``workflow/schemas/config.schema.yaml`` and fills in its defaults,
   exactly as ``snakemake.utils.validate(config, schema, set_default=True)`` does, except
   that an ``integer`` key refuses a float such as ``4.0`` and an error is one short
   message naming the key (not the schema and config dumped): :func:`validate`;
4. runs the checks the schema cannot express: :func:`check` (names that become path
   components, dataset names that collide in output paths, image sizes that are not a
   multiple of the model's patch).

Every function raises :class:`vitscope.errors.ConfigError` naming the file or config
key at fault. Nothing here imports torch: it runs at every Snakemake start.
docs/hostile-inputs.md ("Careless config files") lists the cases.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

#: Model aliases, dataset names and every other config name that becomes a path component.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
#: DAVIS sequence names (a folder and a file stem each; no dots).
SEQUENCE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]*"

#: Endings a dataset name may not have: the output of the dataset ``<name>`` then equals one
#: of ``<name><suffix>`` (Snakemake's AmbiguousRuleException, or a job of a dataset that does
#: not exist). Derived from the rule files; tests/test_configcheck.py checks it against them.
#: Suffixes after which another wildcard follows (clustering's ``{dataset}_{metric}.pdf``)
#: are not listed: the metric is always the last part, so those names stay unambiguous.
RESERVED_SUFFIXES: dict[str, tuple[str, str]] = {
    "_heads": ("results/figures/attention_distance/{dataset}_heads.pdf", "plot_attention_distance"),
}

#: Input side the model is built for when models.<alias>.image_size is absent
#: (vitscope.models.registry, vitscope.models.zoo).
DEFAULT_IMAGE_SIZE = 224

#: Numeric schema keys without a maximum, on purpose (tests/test_configcheck.py checks that every
#: other integer or number in the schema has one): none of them sizes memory or time.
UNBOUNDED: dict[str, str] = {
    "models.*.seed": "a seed",
    "models.*.mean[]": "a normalization constant",
    "models.*.std[]": "a normalization constant",
    "models.*.model_kwargs.patch_size": "a larger patch means fewer tokens; it must divide image_size",
    "models.*.train.lr": "an optimizer constant",
    "models.*.train.weight_decay": "an optimizer constant",
    "models.*.train.seed": "a seed",
    "models.*.train.temperature": "a loss constant",
    "datasets.*.max_images": "keeps the first K images; a K above the dataset's size keeps them all",
    "datasets.*.per_class": "keeps the first K images per class; a K above a class's size keeps it all",
    "datasets.*.synthetic.seed": "a seed",
    "extract.order_seed": "a seed",
    "extract.parity_tolerance": "a tolerance",
    "analyses.offset_heads.radius": "a radius beyond the token grid covers the grid",
    "analyses.offset_heads.min_shift": "a threshold",
    "analyses.offset_heads.min_lift": "a threshold",
    "analyses.clustering.seed": "a seed",
    "analyses.object_clustering.seed": "a seed",
    "analyses.knn.ks[]": "a k above the memory bank's size is clipped to it",
    "analyses.knn.temperature": "a vote constant",
    "analyses.spair.alphas[]": "a threshold",
    "analyses.spair.pairs_per_category": "the first N pairs; an N above a category's pair count takes them all",
    "analyses.davis.temperature": "an affinity constant",
    "analyses.davis.radius": "a radius beyond the token grid covers the grid (0 = no restriction)",
    "analyses.davis.bound_th": "a tolerance",
    "analyses.best_layers.knn.k": "must be one of analyses.knn.ks",
    "analyses.best_layers.spair.alpha": "must be one of analyses.spair.alphas",
}


# --------------------------------------------------------------------------- entry point


def prepare(
    config: dict[str, Any],
    schema: str | Path | Mapping[str, Any],
    files: Sequence[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
) -> None:
    """Check ``config`` and fill in the schema's defaults, in place (see the module docstring).

    ``files`` are the config files Snakemake loaded (``workflow.configfiles``), ``overrides``
    the values given with ``--config`` (``workflow.config_settings.config``), already merged
    into ``config`` by Snakemake as strings where they were nested.
    """
    schema = load_schema(schema) if not isinstance(schema, Mapping) else schema
    for file in files:
        check_duplicate_keys(file)
    if overrides:
        _merge(config, coerce_overrides(overrides, schema))
    validate(config, schema)
    check(config)


#: YAML's safe loader, in C (libyaml) where PyYAML has it: the same documents ~10x faster at every start
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: schema keywords this module fills in from the package: ``x-vitscope: products`` on a string
#: node gets ``enum`` = every dump product, ``x-vitscope: default-products`` on an array gets
#: ``default`` = the products recorded by default (vitscope.io.dumps: a product is added there only)
SCHEMA_FILL = "x-vitscope"


def load_schema(path: str | Path) -> dict[str, Any]:
    """The JSON schema in ``path`` (YAML or JSON), with the package's lists filled in (:data:`SCHEMA_FILL`)."""
    with open(path, encoding="utf-8") as handle:
        schema = yaml.load(handle, Loader=SAFE_LOADER)
    _fill(schema)
    return schema


def _fill(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _fill(item)
        return
    if not isinstance(node, dict):
        return
    what = node.get(SCHEMA_FILL)
    if what is not None:
        from ..io import dumps  # h5py (~0.1 s), only when a schema asks for the products

        if what == "products":
            node["enum"] = list(dumps.PRODUCTS)
        elif what == "default-products":
            node["default"] = list(dumps.DEFAULT_PRODUCTS)
        else:
            raise ConfigError(f"schema: unknown {SCHEMA_FILL}: {what!r} (products, default-products)")
    for value in node.values():
        _fill(value)


def check(config: Mapping[str, Any]) -> None:
    """The checks of a validated config (defaults filled in) that the schema cannot express."""
    check_names(config)
    check_collisions(config)
    check_patches(config)


# --------------------------------------------------------------------------- 1. duplicate keys


def check_duplicate_keys(path: str | Path, text: str | None = None) -> None:
    """Refuse a mapping key given twice in the YAML (or JSON) file ``path``.

    ``text`` is the file's content (read from ``path`` when None). YAML merge keys
    (``<<: *anchor``) are not duplicates: keys given next to them override the merged
    ones on purpose. A file that is not valid YAML is left to Snakemake's own reader.
    """
    if text is None:
        text = Path(path).read_text(encoding="utf-8")
    loader = SAFE_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _walk_keys(loader, node, "", str(path), set())
    except yaml.YAMLError:
        return
    finally:
        loader.dispose()


def _walk_keys(loader: yaml.SafeLoader, node: yaml.Node, where: str, file: str, seen: set[int]) -> None:
    if id(node) in seen:  # an alias: walked where its anchor stands
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk_keys(loader, item, f"{where}[{i}]", file, seen)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    lines: dict[Any, int] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            _walk_keys(loader, value_node, where, file, seen)
            continue
        key = loader.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
        line = key_node.start_mark.line + 1
        path = f"{where}.{key}" if where else str(key)
        if key is not None and isinstance(key, (str, int, float, bool)):
            if key in lines:
                twice = f"lines {lines[key]} and {line}" if lines[key] != line else f"both on line {line}"
                raise ConfigError(
                    f"{file} line {line}: {path} is given twice ({twice}); "
                    "YAML would keep the last one and silently drop the first"
                )
            lines[key] = line
        _walk_keys(loader, value_node, path, file, seen)


# --------------------------------------------------------------------------- 2. --config overrides


def coerce_overrides(overrides: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` with the strings the schema does not want as strings parsed as YAML.

    Snakemake parses ``--config key=value`` as a number or boolean at the top level only;
    a nested value (``--config extract='{batch_size: 8}'``) is read with YAML's BaseLoader,
    which leaves every scalar a string ('8'). A string at a key whose schema does not allow
    a string is parsed with YAML's safe loader, as a config file's value would be (8, 0.5,
    true, null; a list or mapping when the key takes one); :func:`validate` then judges the
    result (8.0 for an integer is refused as in a file). Any other string stays a string.
    """
    return {key: _coerce(value, _child(schema, key)) for key, value in overrides.items()}


def _branches(schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]


def _types(schema: Mapping[str, Any]) -> set[str]:
    types: set[str] = set()
    for branch in _branches(schema):
        declared = branch.get("type", [])
        types.update([declared] if isinstance(declared, str) else declared)
    return types


def _child(schema: Mapping[str, Any] | None, key: str) -> Mapping[str, Any] | None:
    if schema is None:
        return None
    for branch in _branches(schema):
        if key in branch.get("properties", {}):
            return branch["properties"][key]
        extra = branch.get("additionalProperties")
        if isinstance(extra, Mapping):
            return extra
    return None


def _items(schema: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if schema is None:
        return None
    for branch in _branches(schema):
        if isinstance(branch.get("items"), Mapping):
            return branch["items"]
    return None


def _fits(value: Any, types: set[str]) -> bool:
    checks = {
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "null": value is None,
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }
    return any(checks.get(t, False) for t in types)


def _coerce(value: Any, schema: Mapping[str, Any] | None) -> Any:
    if schema is None:
        return value
    if isinstance(value, Mapping):
        return {key: _coerce(item, _child(schema, key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = _items(schema)
        return [_coerce(item, items) for item in value]
    if isinstance(value, str):
        types = _types(schema)
        if not types or "string" in types:
            return value
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if isinstance(parsed, (list, dict)):
            return _coerce(parsed, schema) if _fits(parsed, types) else value
        if not isinstance(parsed, str):  # 8, 0.5, true, null: validate() judges it as what it says
            return parsed
    return value


def _merge(config: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Nested mappings of ``overrides`` merged into ``config`` key by key (as Snakemake merges ``--config``)."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            _merge(config[key], value)
        else:
            config[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)


# --------------------------------------------------------------------------- 3. schema validation


def _is_integer(checker: Any, instance: Any) -> bool:
    """JSON Schema's integer minus floats: 4.0 passes the standard check, then fails in torch."""
    return isinstance(instance, int) and not isinstance(instance, bool)


def _validator_class() -> Any:
    """Draft 2020-12 with set_default (as snakemake.utils.validate) and strict integers."""
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]):
        # snakemake.utils.validate's set_default: the default of an absent key is set before the
        # object's properties are validated, so defaults inside defaults are filled in too. The
        # default is copied: two entries given one default (an empty list) never share it.
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer)
    return validators.extend(Draft202012Validator, {"properties": set_defaults}, type_checker=checker)


def validate(config: dict[str, Any], schema: Mapping[str, Any]) -> None:
    """Validate ``config`` against ``schema`` and fill in its defaults (in place).

    The first error found is raised as a :class:`ConfigError` of a line or two:
    ``extract.batch_size = 0: must be >= 1 (minimum)``, then the key's description.
    """
    validator = _validator_class()(schema)
    error = next(iter(validator.iter_errors(config)), None)
    if error is not None:
        raise ConfigError(describe_error(error))


def _dotted(parts: Sequence[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "null": "null",
    "array": "a list",
    "object": "a mapping",
}


def _type_words(types: Any) -> str:
    types = [types] if isinstance(types, str) else list(types)
    return " or ".join(_TYPE_WORDS.get(t, t) for t in types)


def _describe_schema(schema: Mapping[str, Any]) -> str:
    """A few words for what ``schema`` accepts (an integer >= 8; a list of 2 integers >= 8)."""
    words = _type_words(schema.get("type", "any value"))
    if "minimum" in schema and "maximum" in schema:
        bounds = [f"from {schema['minimum']} to {schema['maximum']}"]
    else:
        signs = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))
        bounds = [f"{sign} {schema[key]}" for key, sign in signs if key in schema]
    if schema.get("type") == "array" and isinstance(schema.get("items"), Mapping):
        count = schema.get("minItems") if schema.get("minItems") == schema.get("maxItems") else None
        inner = _describe_schema(schema["items"]).replace("an integer", "integers").replace("a number", "numbers")
        words = f"a list of {count or ''} {inner}".replace("  ", " ")
    return " ".join([words, *bounds]) if bounds else words


def describe_error(error: Any) -> str:
    """A jsonschema ValidationError as ``key = value: what is wrong (keyword)`` plus the key's description."""
    path = _dotted(list(error.absolute_path))
    keyword, expected, value = error.validator, error.validator_value, error.instance
    if keyword in ("oneOf", "anyOf") and error.context:
        # one branch takes this kind of value (a list: the [height, width] branch): its error is the one to show
        kinds = [i for i, branch in enumerate(expected) if _fits(value, _types(branch))]
        inner = [sub for sub in error.context if kinds == [sub.relative_schema_path[0]]]
        if inner:
            return describe_error(min(inner, key=lambda sub: -len(sub.absolute_path)))
    subject = f"{path or 'the config'} = {_short(value)}"
    if "propertyNames" in error.schema_path:
        message = (
            f"{path or 'the config'} has the name {value!r}, which must match {expected}: names become file and "
            "folder names (a letter or digit, then letters, digits, '_', '.' or '-'; no space or line break)"
        )
        return f"{message} (propertyNames)"
    if keyword == "type":
        message = f"{subject}: must be {_type_words(expected)}"
        if isinstance(value, float) and "integer" in ([expected] if isinstance(expected, str) else expected):
            message += f" (write {int(value)} without the '.0')" if value.is_integer() else ""
        elif isinstance(value, str):
            message += " (got a string)"
    elif keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[keyword]
        message = f"{subject}: must be {sign} {expected}"
    elif keyword == "enum":
        message = f"{subject}: must be one of {', '.join(map(str, expected))}"
    elif keyword == "pattern":
        message = f"{subject}: must match {expected} (a line break or space counts)"
    elif keyword == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        extra = [key for key in value if key not in known] if isinstance(value, Mapping) else []
        where = path or "the config"
        message = f"{where}: unknown key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}"
        close = difflib.get_close_matches(str(extra[0]), known, n=1) if extra else []
        message += f" (did you mean {close[0]!r}?)" if close else ""
        message += f"; known keys: {', '.join(known)}" if known else ""
    elif keyword == "required":
        missing = [key for key in expected if isinstance(value, Mapping) and key not in value]
        message = f"{path or 'the config'}: missing key {', '.join(map(repr, missing))}"
    elif keyword in ("minItems", "maxItems"):
        message = f"{subject}: must have {'at least' if keyword == 'minItems' else 'at most'} {expected} items"
    elif keyword == "minProperties":
        message = f"{path or 'the config'}: must have at least {expected} entr{'y' if expected == 1 else 'ies'}"
    elif keyword == "uniqueItems":
        message = f"{subject}: must not repeat an item"
    elif keyword == "multipleOf":
        message = f"{subject}: must be a multiple of {expected}"
    elif keyword in ("oneOf", "anyOf"):
        message = f"{subject}: must be " + "; or ".join(_describe_schema(branch) for branch in expected)
    else:
        message = f"{path or 'the config'}: {_short(error.message, 200)}"
    message += f" ({keyword})"
    description = error.schema.get("description") if isinstance(error.schema, Mapping) else None
    if description and keyword != "additionalProperties":
        text = " ".join(str(description).split())
        text = text if len(text) <= 200 else text[:200].rsplit(" ", 1)[0] + " ..."
        message += f"\n  {path}: {text}"
    return message


# --------------------------------------------------------------------------- 4. checks of a valid config


def _names(config: Mapping[str, Any]) -> Iterator[tuple[str, Any, str]]:
    """(key, value, pattern) of every config name that becomes a path component."""
    for section in ("models", "datasets"):
        for name in config.get(section, {}):
            yield section, name, NAME_PATTERN
    for dataset, entry in config.get("datasets", {}).items():
        key = f"datasets.{dataset}"
        for field in ("name", "split", "resolution"):
            if field in entry:
                yield f"{key}.{field}", entry[field], NAME_PATTERN
        for i, sequence in enumerate(entry.get("sequences", [])):
            yield f"{key}.sequences[{i}]", sequence, SEQUENCE_PATTERN
        synthetic = entry.get("synthetic", {})
        if "retrieval_name" in synthetic:
            yield f"{key}.synthetic.retrieval_name", synthetic["retrieval_name"], NAME_PATTERN
        for i, sequence in enumerate(synthetic.get("davis_sequences", [])):
            yield f"{key}.synthetic.davis_sequences[{i}]", sequence, SEQUENCE_PATTERN


def check_names(config: Mapping[str, Any]) -> None:
    """Every name that becomes a path component matches its pattern as a whole string.

    The schema's patterns say the same, but ``$`` in a JSON-Schema pattern, run by Python's
    ``re.search``, also matches before a final line break ('dino\\n' would pass ``^...$``).
    """
    for key, value, pattern in _names(config):
        if not isinstance(value, str) or re.fullmatch(pattern, value) is None:
            where = f"{key} has the name {value!r}" if key in ("models", "datasets") else f"{key} = {value!r}"
            raise ConfigError(
                f"{where}: names become file and folder names and must match {pattern} "
                "(a letter or digit, then letters, digits, '_', '.' or '-'; no space or line break)"
            )


def check_collisions(config: Mapping[str, Any]) -> None:
    """No two names that map onto the same output files.

    A dataset name may not end in a suffix of :data:`RESERVED_SUFFIXES`; models and datasets
    that differ only in case collide on a case-insensitive file system (macOS, Windows).
    """
    datasets = config.get("datasets", {})
    for name in datasets:
        for suffix, (pattern, rule) in RESERVED_SUFFIXES.items():
            if isinstance(name, str) and name.endswith(suffix):
                base = name[: -len(suffix)]
                whose = f"dataset '{base}'" if base in datasets else f"a dataset '{base}' (Snakemake then looks for it)"
                raise ConfigError(
                    f"datasets.{name}: a dataset name may not end in '{suffix}': its figure "
                    f"'{pattern.format(dataset=base)}' (rule {rule}) is also the '{suffix}' figure of {whose}, "
                    f"so Snakemake cannot tell the two apart. Rename datasets.{name} "
                    f"(reserved endings: {', '.join(RESERVED_SUFFIXES)})"
                )
    for section in ("models", "datasets"):
        folded: dict[str, str] = {}
        for name in config.get(section, {}):
            other = folded.setdefault(str(name).casefold(), name)
            if other != name:
                raise ConfigError(
                    f"{section}.{other} and {section}.{name} differ only in case: their output files are the same "
                    "on a case-insensitive file system (macOS, Windows); rename one"
                )


def model_patch(entry: Mapping[str, Any]) -> tuple[int, str, Any] | None:
    """(patch, key, value) of a ``models.<alias>`` entry, read from its names, or None.

    The key is ``model_kwargs.patch_size`` when given, else ``arch`` (timm names carry
    ``patch{P}``), else ``size`` of a zoo family (``B/16``). None for an architecture whose
    name carries no patch: then the check is left to :func:`vitscope.models.registry.create`,
    which builds the model (building it here would import torch at every Snakemake start).
    """
    kwargs = entry.get("model_kwargs") or {}
    if isinstance(kwargs.get("patch_size"), int):
        return kwargs["patch_size"], "model_kwargs.patch_size", kwargs["patch_size"]
    arch = entry.get("arch")
    if isinstance(arch, str):
        match = re.search(r"patch(\d+)", arch)
        return (int(match.group(1)), "arch", arch) if match else None
    size = entry.get("size")
    if entry.get("family") is not None and isinstance(size, str):
        match = re.fullmatch(r"\s*[A-Za-z]+/(\d+)\s*", size)
        return (int(match.group(1)), "size", size) if match else None
    return None


def _sides(value: Any) -> list[int]:
    return [value] if isinstance(value, int) else list(value)


def _multiples(side: int, patch: int) -> str:
    lower = side // patch * patch
    return f"{lower} or {lower + patch}" if lower else f"{patch}"


def check_patches(config: Mapping[str, Any]) -> None:
    """Every input size a model is built for is a multiple of its patch.

    timm builds a ViT for any size: a size that is not a multiple of the patch drops
    the last pixels of every row and column, or fails later in timm's patch embedding
    (an AssertionError naming no key). Checked: ``models.<alias>.image_size`` (224 when
    absent) and ``analyses.spair.image_size`` (when SPair runs), against every model.
    """
    spair = config.get("analyses", {}).get("spair", {})
    spair_size = spair.get("image_size") if spair.get("datasets") else None
    for alias, entry in config.get("models", {}).items():
        found = model_patch(entry)
        if found is None:
            continue
        patch, source, given = found
        origin = f"models.{alias}.{source} = {given!r}"
        size = entry.get("image_size", DEFAULT_IMAGE_SIZE)
        bad = [side for side in _sides(size) if side % patch]
        if bad:
            default = "" if "image_size" in entry else " (the default)"
            raise ConfigError(
                f"models.{alias}.image_size = {size!r}{default} is not a multiple of the model's patch {patch} "
                f"({origin}); timm would drop the last {bad[0] % patch} pixels of every row or column, or fail "
                f"in its patch embedding. Use e.g. {_multiples(bad[0], patch)}"
            )
        if spair_size is not None and spair_size % patch:
            raise ConfigError(
                f"analyses.spair.image_size = {spair_size} is not a multiple of the patch {patch} of models.{alias} "
                f"({origin}); use e.g. {_multiples(spair_size, patch)}, or null for each model's own image_size"
            )
