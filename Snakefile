# vitscope: how Vision Transformers trained under different supervision attend,
# what they represent and what each block is good for.
# `snakemake --cores all` runs the embedded demo (config.yaml); use
# `--configfile configs/<name>.yaml` for real models and data.

import os
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("8.20")

# The workflow's own package (what the code params hash), ahead of any installed copy: here,
# and in every job (script jobs, conda envs and Slurm jobs inherit the environment).
_SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, _SRC)
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (_SRC, os.environ.get("PYTHONPATH")) if p))

from vitscope.errors import ConfigError
from vitscope.workflow import configcheck, registry

# The embedded demo, unless --configfile names another config (Snakemake would
# otherwise merge the two, and a study run would also analyse the demo's models).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# Duplicate keys, --config strings, the schema (its defaults filled in) and the checks
# it cannot express, each error in a line or two naming the key (docs/hostile-inputs.md).
try:
    configcheck.prepare(
        config,
        Path(workflow.basedir) / "workflow/schemas/config.schema.yaml",
        files=workflow.configfiles,
        overrides=workflow.config_settings.config,
    )
except ConfigError as err:
    raise WorkflowError(f"config error: {err}") from None


# `snakemake --report report.zip`: every figure, captioned (workflow/report/).
report: "workflow/report/workflow.rst"


# Names (configcheck.NAME_PATTERN) hold no line break or "/": no anchors needed inside a wildcard.
wildcard_constraints:
    model=configcheck.NAME_PATTERN,
    dataset=configcheck.NAME_PATTERN,
    model_a=configcheck.NAME_PATTERN,
    model_b=configcheck.NAME_PATTERN,
    metric="|".join(registry.CLUSTER_METRICS),
    task="|".join(registry.tasks()),


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/extract.smk"
include: "rules/attention.smk"
include: "rules/features.smk"
include: "rules/downstream.smk"
include: "rules/davis.smk"
include: "rules/estimate.smk"
include: "rules/targets.smk"


rule all:
    default_target: True
    input:
        registry.targets(config),


cache_signatures(workflow.rules, list(globals().values()))


# Where the figures, the best-layer table and the report are, and the table (rules/common.smk).
onsuccess:
    print(run_summary(), end="")
