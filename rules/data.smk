# Datasets: the demo's synthetic images and the index (ordered image list) of every dataset.


rule synthetic_dataset:
    output:
        directory("results/synthetic/{dataset}"),
    log:
        "logs/synthetic_dataset/{dataset}.log",
    conda:
        "../envs/vitscope.yaml"
    params:
        spec=synthetic_spec,
        code=code_of("synthetic_dataset"),
    script:
        "../workflow/scripts/synthetic_dataset.py"


# A checkpoint: when its dataset changed but the index came out the same (an image added
# beyond per_class, a file touched), nothing that reads the index reruns.
checkpoint index_dataset:
    input:
        synthetic_input,
    output:
        "results/index/{dataset}.csv",
    log:
        "logs/index_dataset/{dataset}.log",
    conda:
        "../envs/vitscope.yaml"
    params:
        entry=index_entry,
        files=dataset_fingerprint,
        code=code_of("index_dataset"),
    script:
        "../workflow/scripts/index_dataset.py"
