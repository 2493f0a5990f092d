# Datasets: the demo's synthetic images and the index (ordered image list) of every dataset.


rule synthetic_dataset:
    output:
        directory("results/synthetic/{dataset}"),
    params:
        spec=synthetic_spec,
        code=code_version("synthetic", "synthetic_video", "video", "dumps"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/synthetic_dataset/{dataset}.log",
    script:
        "../workflow/scripts/synthetic_dataset.py"


rule index_dataset:
    input:
        synthetic_input,
    output:
        "results/index/{dataset}.csv",
    params:
        entry=dataset_entry,
        code=code_version("data"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/index_dataset/{dataset}.log",
    script:
        "../workflow/scripts/index_dataset.py"
