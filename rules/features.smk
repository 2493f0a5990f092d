# What the models represent (protocols.md 4): CKA between model pairs,
# clustering per block of images and of COCO objects, from the dumps only
# (no model is re-run).


rule cka_pair:
    input:
        dump_a="results/dumps/{model_a}/{dataset}.h5",
        dump_b="results/dumps/{model_b}/{dataset}.h5",
    output:
        cka="results/cka/{dataset}/{model_a}/{model_b}.npz",
    params:
        code=code_version("features/cka", "io/dumps", "io/tables"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/cka_pair/{dataset}/{model_a}/{model_b}.log",
    script:
        "../workflow/scripts/cka_pair.py"


rule clustering:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        table="results/clustering/{model}/{dataset}.csv",
    params:
        seed=config["analyses"]["clustering"]["seed"],
        n_init=config["analyses"]["clustering"]["n_init"],
        code=code_version("features/clustering", "io/dumps", "io/tables"),
    threads: 2
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/clustering/{model}/{dataset}.log",
    script:
        "../workflow/scripts/clustering.py"


rule object_clustering:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        table="results/object_clustering/{model}/{dataset}.csv",
    params:
        seed=config["analyses"]["object_clustering"]["seed"],
        n_init=config["analyses"]["object_clustering"]["n_init"],
        code=code_version("features/clustering", "io/dumps", "io/tables"),
    threads: 2
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/object_clustering/{model}/{dataset}.log",
    script:
        "../workflow/scripts/object_clustering.py"
