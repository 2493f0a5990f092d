# What the models represent (docs/protocols.md#feature-analyses): CKA between model pairs,
# clustering per block of images and of COCO objects, from the dumps only
# (no model is re-run).


rule cka_pair:
    input:
        dump_a="results/dumps/{model_a}/{dataset}.h5",
        dump_b="results/dumps/{model_b}/{dataset}.h5",
    output:
        cka="results/cka/{dataset}/{model_a}/{model_b}.npz",
    log:
        "logs/cka_pair/{dataset}/{model_a}/{model_b}.log",
    conda:
        "../envs/vitscope.yaml"
    params:
        code=code_of("cka_pair"),
    script:
        "../workflow/scripts/cka_pair.py"


rule plot_cka_full:
    input:
        cka="results/cka/{dataset}/{model_a}/{model_b}.npz",
    output:
        pdf="results/figures/cka_full/{dataset}/{model_a}/{model_b}.pdf",
        png=figure_report("results/figures/cka_full/{dataset}/{model_a}/{model_b}.png", "cka_full"),
        table=figure_report("results/figures/cka_full/{dataset}/{model_a}/{model_b}.csv", "cka_full"),
    log:
        "logs/plot_cka_full/{dataset}/{model_a}/{model_b}.log",
    conda:
        "../envs/plots.yaml"
    params:
        representations=config["analyses"]["cka"]["representations"],
        cmap=config["analyses"]["cka"]["cmap"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_cka_full"),
    script:
        "../workflow/scripts/plot_cka_full.py"


rule plot_cka_last:
    input:
        pairs=cka_pair_files,
    output:
        pdf="results/figures/cka_last/{dataset}.pdf",
        png=figure_report("results/figures/cka_last/{dataset}.png", "cka_last"),
        table=figure_report("results/figures/cka_last/{dataset}.csv", "cka_last"),
    log:
        "logs/plot_cka_last/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    params:
        models=MODELS,
        pairs=cka_pairs(),
        cmap=config["analyses"]["cka"]["cmap"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_cka_last"),
    script:
        "../workflow/scripts/plot_cka_last.py"


rule clustering:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        table="results/clustering/{model}/{dataset}.csv",
    log:
        "logs/clustering/{model}/{dataset}.log",
    conda:
        "../envs/vitscope.yaml"
    threads: 2
    params:
        seed=config["analyses"]["clustering"]["seed"],
        n_init=config["analyses"]["clustering"]["n_init"],
        code=code_of("clustering"),
    script:
        "../workflow/scripts/clustering.py"


rule plot_clustering:
    input:
        tables=expand("results/clustering/{model}/{{dataset}}.csv", model=MODELS),
    output:
        pdf="results/figures/clustering/{dataset}_{metric}.pdf",
        png=figure_report("results/figures/clustering/{dataset}_{metric}.png", "clustering"),
        table=figure_report("results/figures/clustering/{dataset}_{metric}.csv", "clustering"),
    log:
        "logs/plot_clustering/{dataset}_{metric}.log",
    conda:
        "../envs/plots.yaml"
    params:
        models=MODELS,
        representations=["cls", "spatial"],
        title="KMeans clustering of {dataset} (k = number of classes)",
        dpi=config["figures"]["dpi"],
        code=code_of("plot_clustering"),
    script:
        "../workflow/scripts/plot_clustering.py"


rule object_clustering:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        table="results/object_clustering/{model}/{dataset}.csv",
    log:
        "logs/object_clustering/{model}/{dataset}.log",
    conda:
        "../envs/vitscope.yaml"
    threads: 2
    params:
        seed=config["analyses"]["object_clustering"]["seed"],
        n_init=config["analyses"]["object_clustering"]["n_init"],
        code=code_of("object_clustering"),
    script:
        "../workflow/scripts/object_clustering.py"


rule plot_object_clustering:
    input:
        tables=expand("results/object_clustering/{model}/{{dataset}}.csv", model=MODELS),
    output:
        pdf="results/figures/object_clustering/{dataset}_{metric}.pdf",
        png=figure_report("results/figures/object_clustering/{dataset}_{metric}.png", "object_clustering"),
        table=figure_report("results/figures/object_clustering/{dataset}_{metric}.csv", "object_clustering"),
    log:
        "logs/plot_object_clustering/{dataset}_{metric}.log",
    conda:
        "../envs/plots.yaml"
    params:
        models=MODELS,
        representations=["object"],
        title="KMeans of {dataset} objects (k = categories present)",
        dpi=config["figures"]["dpi"],
        code=code_of("plot_clustering"),
    script:
        "../workflow/scripts/plot_clustering.py"


# Single-figure targets: `snakemake --cores all fig_cls_maps`.
