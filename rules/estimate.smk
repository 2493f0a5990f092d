# `snakemake estimate`: the storage and job-hours of the config's dumps before any job runs
# (vitscope.workflow.estimate; docs/usage.md, "Before a large run"). No inputs: it plans from
# the config, and from the indexes already built.


def estimate_rows(wildcards):
    """results/estimate.tsv's rows and the summary it prints (h5py is imported only here)."""
    from vitscope.workflow import estimate

    indexes = {name: f"results/index/{name}.csv" for name in config["datasets"]}
    rows = _workflow_error(estimate.estimate, config, indexes)
    return {"table": estimate.table(rows), "summary": estimate.summary(rows)}


rule estimate:
    output:
        "results/estimate.tsv",
    log:
        "logs/estimate.log",
    localrule: True
    conda:
        "../envs/vitscope.yaml"
    params:
        estimate=estimate_rows,
        code=code_of("estimate"),
    script:
        "../workflow/scripts/estimate.py"
