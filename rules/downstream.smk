# What each block is good for (docs/protocols.md#downstream-tasks): k-NN classification and revisited
# Oxford/Paris retrieval per block, from the dumps only, SPair-71k keypoint transfer
# (dense features, the model run by the rule), and the best block per task.


rule knn:
    input:
        train=knn_train_dump,
        val="results/dumps/{model}/{dataset}.h5",
    output:
        table="results/knn/{model}/{dataset}.csv",
    log:
        "logs/knn/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/knn/{model}/{dataset}.tsv"
    conda:
        "../envs/vitscope.yaml"
    threads: 2
    resources:
        gpu=int(config["analyses"]["knn"]["device"] != "cpu"),
    params:
        ks=config["analyses"]["knn"]["ks"],
        temperature=config["analyses"]["knn"]["temperature"],
        query_chunk=config["analyses"]["knn"]["query_chunk"],
        bank_chunk=config["analyses"]["knn"]["bank_chunk"],
        device=config["analyses"]["knn"]["device"],
        code=code_of("knn"),
    script:
        "../workflow/scripts/knn.py"


rule retrieval:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
        gnd=gnd_input,
    output:
        table="results/retrieval/{model}/{dataset}.csv",
    log:
        "logs/retrieval/{model}/{dataset}.log",
    conda:
        "../envs/vitscope.yaml"
    threads: 2
    params:
        entry=revisited_entry,
        files=annotation_stamp,
        code=code_of("retrieval"),
    script:
        "../workflow/scripts/retrieval.py"


rule spair:
    input:
        pairs=spair_input,
        checkpoint=checkpoint_input,
    output:
        table="results/spair/{model}/{dataset}.csv",
        categories="results/spair/{model}/{dataset}/categories.csv",
        pairs="results/spair/{model}/{dataset}/pairs.csv",
    log:
        "logs/spair/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/spair/{model}/{dataset}.tsv"
    conda:
        "../envs/vitscope.yaml"
    threads: 2
    resources:
        gpu=model_gpus,
        mem_mb=model_mem_mb,
        runtime=model_runtime,
    params:
        model=model_entry,
        weights=checkpoint_stamp,
        files=spair_stamp,
        entry=spair_entry,
        alphas=config["analyses"]["spair"]["alphas"],
        pairs_per_category=config["analyses"]["spair"]["pairs_per_category"],
        image_size=config["analyses"]["spair"]["image_size"],
        renormalize=config["analyses"]["spair"]["renormalize"],
        batch_size=config["analyses"]["spair"]["batch_size"],
        max_images=config["analyses"]["spair"]["max_images"],
        device=config["extract"]["device"],
        code=code_of("spair"),
    script:
        "../workflow/scripts/spair.py"


rule best_layers:
    input:
        best_layer_files(),
    output:
        csv=figure_report("results/tables/best_layers.csv", "best_layers"),
        md="results/tables/best_layers.md",
        tex="results/tables/best_layers.tex",
        html=figure_report("results/tables/best_layers.html", "best_layers"),
    log:
        "logs/best_layers/best_layers.log",
    conda:
        "../envs/vitscope.yaml"
    params:
        tasks=best_layer_tasks(),
        models=MODELS,
        code=code_of("best_layers"),
    script:
        "../workflow/scripts/best_layers.py"


# One figure rule for every downstream task, DAVIS (rules/davis.smk) included: {task} is one
# of registry.tasks(), the analyses registered with registry.DOWNSTREAM_FIGURE.
rule plot_downstream:
    input:
        tables=expand("results/{{task}}/{model}/{{dataset}}.csv", model=MODELS),
    output:
        pdf="results/figures/{task}/{dataset}.pdf",
        png=figure_report("results/figures/{task}/{dataset}.png", "{task}"),
        table=figure_report("results/figures/{task}/{dataset}.csv", "{task}"),
    log:
        "logs/plot_downstream/{task}/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    params:
        models=MODELS,
        dpi=config["figures"]["dpi"],
        code=code_of("plot_downstream"),
    script:
        "../workflow/scripts/plot_downstream.py"
