# `snakemake estimate`: the storage and job-hours of the config's dumps before any job runs
# (vitscope.workflow.estimate; docs/usage.md, "Before a large run"). No inputs: it plans from
# the config, and from the indexes already built.


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
