# DAVIS-2017 semi-supervised video object segmentation with every block (docs/protocols.md#downstream-tasks,
# docs/downstream.md): one job per model, dataset and sequence (a cluster runs the sequences in
# parallel), then the objects of all sequences pooled per block.


rule davis_sequence:
    input:
        data=davis_sequence_input,
        checkpoint=checkpoint_input,
    output:
        masks=directory("results/davis/{model}/{dataset}/sequences/{sequence}"),
        table="results/davis/{model}/{dataset}/sequences/{sequence}.csv",
    log:
        "logs/davis/{model}/{dataset}/{sequence}.log",
    benchmark:
        "results/benchmarks/davis/{model}/{dataset}/{sequence}.tsv"
    wildcard_constraints:
        sequence=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    conda:
        "../envs/vitscope.yaml"
    threads: 1
    resources:
        gpu=model_gpus,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    params:
        model=model_entry,
        weights=checkpoint_stamp,
        files=davis_sequence_stamp,
        entry=davis_entry,
        options=lookups.davis_options(config),
        device=config["extract"]["device"],
        code=code_of("davis_sequence"),
    script:
        "../workflow/scripts/davis_sequence.py"


rule davis:
    input:
        tables=davis_sequence_outputs(".csv"),
        masks=davis_sequence_outputs(""),
    output:
        table="results/davis/{model}/{dataset}.csv",
        masks=directory("results/davis/{model}/{dataset}/masks"),
    log:
        "logs/davis/{model}/{dataset}.log",
    conda:
        "../envs/vitscope.yaml"
    params:
        code=code_of("davis"),
    script:
        "../workflow/scripts/davis.py"
