# vitscope: how Vision Transformers trained under different supervision attend,
# what they represent and what each block is good for.
# `snakemake --cores all` runs the embedded demo (config.yaml); use
# `--configfile configs/<name>.yaml` for real models and data.

from snakemake.utils import min_version, validate

min_version("8.20")


# The embedded demo, unless --configfile names another config (Snakemake would
# otherwise merge the two, and a study run would also analyse the demo's models).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"



validate(config, "workflow/schemas/config.schema.yaml", set_default=True)


# `snakemake --report report.zip`: every figure, captioned (workflow/report/).
report: "workflow/report/workflow.rst"


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    model_a=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    model_b=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    metric=r"purity|nmi|ari",
    task=r"knn|retrieval|spair|davis",


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/extract.smk"
include: "rules/attention.smk"
include: "rules/features.smk"
include: "rules/downstream.smk"
include: "rules/davis.smk"
include: "rules/figures.smk"


# After every include: figures (every plot_* rule) are quick and read small tables,
# so on a cluster they run on the submitting host instead of being submitted.
workflow.localrules(*figure_rules())


rule all:
    input:
        all_targets(),
    default_target: True
