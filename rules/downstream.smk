# What each block is good for (protocols.md 5): k-NN classification and revisited
# Oxford/Paris retrieval per block, from the dumps only, and the best block per task.


rule knn:
    input:
        train=knn_train_dump,
        val="results/dumps/{model}/{dataset}.h5",
    output:
        table="results/knn/{model}/{dataset}.csv",
    params:
        ks=config["analyses"]["knn"]["ks"],
        temperature=config["analyses"]["knn"]["temperature"],
        query_chunk=config["analyses"]["knn"]["query_chunk"],
        bank_chunk=config["analyses"]["knn"]["bank_chunk"],
        code=code_version("tasks/knn", "dumps", "tables"),
    threads: 2
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/knn/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/knn/{model}/{dataset}.tsv"
    script:
        "../workflow/scripts/knn.py"


rule retrieval:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
        gnd=gnd_input,
    output:
        table="results/retrieval/{model}/{dataset}.csv",
    params:
        entry=revisited_entry,
        code=code_version("tasks/retrieval", "data", "dumps", "tables"),
    threads: 2
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/retrieval/{model}/{dataset}.log",
    script:
        "../workflow/scripts/retrieval.py"


rule best_layers:
    input:
        best_layer_files(),
    output:
        csv="results/tables/best_layers.csv",
        md="results/tables/best_layers.md",
        tex="results/tables/best_layers.tex",
    params:
        tasks=best_layer_tasks(),
        models=MODELS,
        code=code_version("tasks/table", "tables"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/best_layers/best_layers.log",
    script:
        "../workflow/scripts/best_layers.py"
