# How the models attend: small tables and arrays derived from the dumps.


rule attention_maps:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        maps="results/attention/{model}/{dataset}/maps.npz",
    params:
        code=code_version("attention/metrics", "io/dumps", "io/tables"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/attention_maps/{model}/{dataset}.log",
    script:
        "../workflow/scripts/attention_maps.py"


rule attention_distance:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        table="results/attention/{model}/{dataset}/distance.csv",
    params:
        code=code_version("attention/metrics", "io/dumps", "io/tables"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/attention_distance/{model}/{dataset}.log",
    script:
        "../workflow/scripts/attention_distance.py"


rule aaam:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        aaam="results/attention/{model}/{dataset}/aaam.npz",
    params:
        code=code_version("attention/heads", "attention/metrics", "io/dumps", "io/tables"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/aaam/{model}/{dataset}.log",
    script:
        "../workflow/scripts/aaam.py"


rule offset_heads:
    input:
        aaam="results/attention/{model}/{dataset}/aaam.npz",
    output:
        table="results/attention/{model}/{dataset}/heads.csv",
    params:
        thresholds=offset_thresholds(),
        code=code_version("attention/heads", "attention/metrics", "io/tables"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/offset_heads/{model}/{dataset}.log",
    script:
        "../workflow/scripts/offset_heads.py"


rule offset_heads_table:
    input:
        tables=expand("results/attention/{model}/{{dataset}}/heads.csv", model=MODELS),
    output:
        table="results/tables/offset_heads/{dataset}.csv",
    params:
        models=MODELS,
        code=code_version("attention/heads", "io/tables"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/offset_heads_table/{dataset}.log",
    script:
        "../workflow/scripts/offset_heads_table.py"


rule cls_heads:
    input:
        maps="results/attention/{model}/{dataset}/maps.npz",
    output:
        table="results/attention/{model}/{dataset}/cls_heads.csv",
    params:
        depth=config["analyses"]["cls_heads"]["depth"],
        quantiles=config["analyses"]["cls_heads"]["quantiles"],
        code=code_version("attention/heads", "attention/metrics", "io/tables"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/cls_heads/{model}/{dataset}.log",
    script:
        "../workflow/scripts/cls_heads.py"
rule saliency_iou:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
        annotations=coco_annotations_input,
    output:
        table="results/attention/{model}/{dataset}/saliency_iou.csv",
        per_image="results/attention/{model}/{dataset}/saliency_iou.npz",
    params:
        entry=dataset_entry,
        files=annotation_stamp,
        mass=config["analyses"]["saliency"]["mass"],
        threshold=config["analyses"]["saliency"]["mask_threshold"],
        code=code_version("attention/saliency", "io/datasets", "io/dumps", "io/tables"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/saliency_iou/{model}/{dataset}.log",
    script:
        "../workflow/scripts/saliency_iou.py"


rule attention_exemplars:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        arrays="results/attention/{model}/{dataset}/exemplars.npz",
    params:
        code=code_version("attention/exemplars", "io/datasets", "io/preprocess", "io/dumps", "io/tables"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/attention_exemplars/{model}/{dataset}.log",
    script:
        "../workflow/scripts/attention_exemplars.py"
