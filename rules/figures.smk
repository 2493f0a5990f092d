# Figures: read small tables and arrays only, so a plotting change never re-extracts.


rule plot_cls_maps:
    input:
        maps="results/attention/{model}/{dataset}/maps.npz",
    output:
        pdf="results/figures/cls_maps/{model}/{dataset}.pdf",
        png=figure_report(
            "results/figures/cls_maps/{model}/{dataset}.png", "cls_maps", REPORT_ATTENTION, model="{model}", dataset="{dataset}"
        ),
    params:
        cmap=config["analyses"]["cls_maps"]["cmap"],
        dpi=config["figures"]["dpi"],
        code=code_version("plots/attention", "plots/common", "io/tables"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_cls_maps/{model}/{dataset}.log",
    script:
        "../workflow/scripts/plot_cls_maps.py"


rule plot_attention_distance:
    input:
        tables=expand("results/attention/{model}/{{dataset}}/distance.csv", model=MODELS),
    output:
        pdf="results/figures/attention_distance/{dataset}.pdf",
        png=figure_report(
            "results/figures/attention_distance/{dataset}.png", "attention_distance", REPORT_ATTENTION, model="all",
            dataset="{dataset}",
        ),
        heads_pdf="results/figures/attention_distance/{dataset}_heads.pdf",
        heads_png=figure_report(
            "results/figures/attention_distance/{dataset}_heads.png", "attention_distance_heads", REPORT_ATTENTION,
            caption="attention_distance", model="all", dataset="{dataset}",
        ),
    params:
        models=MODELS,
        units=config["analyses"]["attention_distance"]["units"],
        dpi=config["figures"]["dpi"],
        code=code_version("plots/attention", "plots/common", "io/tables"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_attention_distance/{dataset}.log",
    script:
        "../workflow/scripts/plot_attention_distance.py"


rule plot_aaam:
    input:
        aaam="results/attention/{model}/{dataset}/aaam.npz",
    output:
        pdf="results/figures/aaam/{model}/{dataset}.pdf",
        png=figure_report(
            "results/figures/aaam/{model}/{dataset}.png", "aaam", REPORT_ATTENTION, model="{model}", dataset="{dataset}"
        ),
    params:
        cmap=config["analyses"]["offset_heads"]["cmap"],
        dpi=config["figures"]["dpi"],
        code=code_version("plots/attention", "plots/common", "io/tables"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_aaam/{model}/{dataset}.log",
    script:
        "../workflow/scripts/plot_aaam.py"


rule plot_offsets:
    input:
        table="results/attention/{model}/{dataset}/heads.csv",
    output:
        pdf="results/figures/offsets/{model}/{dataset}.pdf",
        png=figure_report(
            "results/figures/offsets/{model}/{dataset}.png", "offsets", REPORT_ATTENTION, model="{model}", dataset="{dataset}"
        ),
    params:
        cmap=config["analyses"]["offset_heads"]["offset_cmap"],
        dpi=config["figures"]["dpi"],
        code=code_version("plots/common", "plots/heads", "io/tables"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_offsets/{model}/{dataset}.log",
    script:
        "../workflow/scripts/plot_offsets.py"


rule plot_offset_heads:
    input:
        tables=expand("results/attention/{model}/{{dataset}}/heads.csv", model=MODELS),
    output:
        pdf="results/figures/offset_heads/{dataset}.pdf",
        png=figure_report(
            "results/figures/offset_heads/{dataset}.png", "offset_heads", REPORT_ATTENTION, model="all", dataset="{dataset}"
        ),
    params:
        models=MODELS,
        dpi=config["figures"]["dpi"],
        code=code_version("plots/common", "plots/heads", "io/tables"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_offset_heads/{dataset}.log",
    script:
        "../workflow/scripts/plot_offset_heads.py"


rule plot_offset_scatter:
    input:
        tables=expand("results/attention/{model}/{{dataset}}/heads.csv", model=MODELS),
    output:
        pdf="results/figures/offset_scatter/{dataset}.pdf",
        png=figure_report(
            "results/figures/offset_scatter/{dataset}.png", "offset_scatter", REPORT_ATTENTION, model="all", dataset="{dataset}"
        ),
    params:
        models=MODELS,
        units=config["analyses"]["offset_heads"]["scatter_units"],
        dpi=config["figures"]["dpi"],
        code=code_version("plots/common", "plots/heads", "io/tables"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_offset_scatter/{dataset}.log",
    script:
        "../workflow/scripts/plot_offset_scatter.py"


rule plot_cls_heads:
    input:
        maps=expand("results/attention/{model}/{{dataset}}/maps.npz", model=MODELS),
        tables=expand("results/attention/{model}/{{dataset}}/cls_heads.csv", model=MODELS),
    output:
        pdf="results/figures/cls_heads/{dataset}.pdf",
        png=figure_report(
            "results/figures/cls_heads/{dataset}.png", "cls_heads", REPORT_ATTENTION, model="all", dataset="{dataset}"
        ),
    params:
        models=MODELS,
        depth=config["analyses"]["cls_heads"]["depth"],
        quantiles=config["analyses"]["cls_heads"]["quantiles"],
        cmap=config["analyses"]["cls_heads"]["cmap"],
        dpi=config["figures"]["dpi"],
        code=code_version("plots/attention", "plots/common", "attention/heads", "io/tables"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_cls_heads/{dataset}.log",
    script:
        "../workflow/scripts/plot_cls_heads.py"
rule plot_saliency_iou:
    input:
        tables=expand("results/attention/{model}/{{dataset}}/saliency_iou.csv", model=MODELS),
    output:
        pdf="results/figures/saliency_iou/{dataset}.pdf",
        png=figure_report(
            "results/figures/saliency_iou/{dataset}.png", "saliency_iou", REPORT_ATTENTION, model="all", dataset="{dataset}"
        ),
    params:
        models=MODELS,
        mass=config["analyses"]["saliency"]["mass"],
        dpi=config["figures"]["dpi"],
        code=code_version("plots/attention", "plots/common", "io/tables"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_saliency_iou/{dataset}.log",
    script:
        "../workflow/scripts/plot_saliency_iou.py"


rule plot_attention_grids:
    input:
        arrays="results/attention/{model}/{dataset}/exemplars.npz",
    output:
        figure_report(
            directory("results/figures/attention_grids/{model}/{dataset}"), "attention_grids", REPORT_ATTENTION,
            patterns=["{image}.png"], model="{model}", dataset="{dataset}", image="{image}",
        ),
    params:
        heads_per_figure=config["analyses"]["attention_grids"]["heads_per_figure"],
        cmap=config["analyses"]["attention_grids"]["cmap"],
        alpha=config["analyses"]["attention_grids"]["alpha"],
        dpi=config["figures"]["dpi"],
        code=code_version("plots/attention", "plots/common", "attention/exemplars", "io/tables"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_attention_grids/{model}/{dataset}.log",
    script:
        "../workflow/scripts/plot_attention_grids.py"


rule plot_cka_full:
    input:
        cka="results/cka/{dataset}/{model_a}/{model_b}.npz",
    output:
        pdf="results/figures/cka_full/{dataset}/{model_a}/{model_b}.pdf",
        png=figure_report(
            "results/figures/cka_full/{dataset}/{model_a}/{model_b}.png", "cka_full", REPORT_FEATURES,
            model="{model_a} vs {model_b}", dataset="{dataset}",
        ),
        table="results/figures/cka_full/{dataset}/{model_a}/{model_b}.csv",
    params:
        representations=config["analyses"]["cka"]["representations"],
        cmap=config["analyses"]["cka"]["cmap"],
        dpi=config["figures"]["dpi"],
        code=code_version("plots/features", "features/cka", "plots/common", "io/tables"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_cka_full/{dataset}/{model_a}/{model_b}.log",
    script:
        "../workflow/scripts/plot_cka_full.py"


rule plot_cka_last:
    input:
        pairs=cka_pair_files,
    output:
        pdf="results/figures/cka_last/{dataset}.pdf",
        png=figure_report(
            "results/figures/cka_last/{dataset}.png", "cka_last", REPORT_FEATURES, model="all", dataset="{dataset}"
        ),
        table="results/figures/cka_last/{dataset}.csv",
    params:
        models=MODELS,
        pairs=cka_pairs(),
        cmap=config["analyses"]["cka"]["cmap"],
        dpi=config["figures"]["dpi"],
        code=code_version("plots/features", "features/cka", "plots/common", "io/tables", "io/dumps"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_cka_last/{dataset}.log",
    script:
        "../workflow/scripts/plot_cka_last.py"


rule plot_clustering:
    input:
        tables=expand("results/clustering/{model}/{{dataset}}.csv", model=MODELS),
    output:
        pdf="results/figures/clustering/{dataset}_{metric}.pdf",
        png=figure_report(
            "results/figures/clustering/{dataset}_{metric}.png", "clustering", REPORT_FEATURES, model="all",
            dataset="{dataset}", metric="{metric}",
        ),
        table="results/figures/clustering/{dataset}_{metric}.csv",
    params:
        models=MODELS,
        representations=["cls", "spatial"],
        title="KMeans clustering of {dataset} (k = number of classes)",
        dpi=config["figures"]["dpi"],
        code=code_version("plots/features", "features/clustering", "plots/common", "io/tables"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_clustering/{dataset}_{metric}.log",
    script:
        "../workflow/scripts/plot_clustering.py"


rule plot_object_clustering:
    input:
        tables=expand("results/object_clustering/{model}/{{dataset}}.csv", model=MODELS),
    output:
        pdf="results/figures/object_clustering/{dataset}_{metric}.pdf",
        png=figure_report(
            "results/figures/object_clustering/{dataset}_{metric}.png", "object_clustering", REPORT_FEATURES,
            model="all", dataset="{dataset}", metric="{metric}",
        ),
        table="results/figures/object_clustering/{dataset}_{metric}.csv",
    params:
        models=MODELS,
        representations=["object"],
        title="KMeans of {dataset} objects (k = categories present)",
        dpi=config["figures"]["dpi"],
        code=code_version("plots/features", "features/clustering", "plots/common", "io/tables"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_object_clustering/{dataset}_{metric}.log",
    script:
        "../workflow/scripts/plot_clustering.py"


# Single-figure targets: `snakemake --cores all fig_cls_maps`.


rule fig_cls_maps:
    localrule: True
    input:
        [
            f"results/figures/cls_maps/{model}/{dataset}.pdf"
            for dataset in analysis_datasets("cls_maps")
            for model in MODELS
        ],


rule fig_attention_distance:
    localrule: True
    input:
        expand(
            "results/figures/attention_distance/{dataset}{suffix}.pdf",
            dataset=analysis_datasets("attention_distance"),
            suffix=["", "_heads"],
        ),


rule fig_aaam:
    localrule: True
    input:
        fig_inputs("offset_heads", "results/figures/aaam/{model}/{dataset}.pdf"),


rule fig_offsets:
    localrule: True
    input:
        fig_inputs("offset_heads", "results/figures/offsets/{model}/{dataset}.pdf"),


rule fig_offset_heads:
    localrule: True
    input:
        fig_inputs("offset_heads", "results/figures/offset_heads/{dataset}.pdf"),


rule fig_offset_scatter:
    localrule: True
    input:
        fig_inputs("offset_heads", "results/figures/offset_scatter/{dataset}.pdf"),


rule fig_cls_heads:
    localrule: True
    input:
        fig_inputs("cls_heads", "results/figures/cls_heads/{dataset}.pdf"),
rule fig_saliency_iou:
    localrule: True
    input:
        expand("results/figures/saliency_iou/{dataset}.pdf", dataset=analysis_datasets("saliency")),


rule fig_attention_grids:
    localrule: True
    input:
        expand(
            "results/figures/attention_grids/{model}/{dataset}",
            model=MODELS,
            dataset=analysis_datasets("attention_grids"),
        ),


rule fig_cka:
    localrule: True
    input:
        cka_figures("full") + cka_figures("last"),


rule fig_cka_full:
    localrule: True
    input:
        cka_figures("full"),


rule fig_cka_last:
    localrule: True
    input:
        cka_figures("last"),


rule fig_clustering:
    localrule: True
    input:
        clustering_figures(),


rule fig_object_clustering:
    localrule: True
    input:
        object_clustering_figures(),
rule plot_downstream:
    input:
        tables=expand("results/{{task}}/{model}/{{dataset}}.csv", model=MODELS),
    output:
        pdf="results/figures/{task}/{dataset}.pdf",
        png=figure_report(
            "results/figures/{task}/{dataset}.png", "{task}", REPORT_DOWNSTREAM, caption="downstream", model="all",
            dataset="{dataset}",
        ),
        table="results/figures/{task}/{dataset}.csv",
    params:
        models=MODELS,
        dpi=config["figures"]["dpi"],
        code=code_version("plots/tasks", "plots/common", "io/tables"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_downstream/{task}/{dataset}.log",
    script:
        "../workflow/scripts/plot_downstream.py"


rule fig_knn:
    localrule: True
    input:
        knn_figures(),


rule fig_retrieval:
    localrule: True
    input:
        retrieval_figures(),


rule fig_spair:
    localrule: True
    input:
        spair_figures(),


rule table_best_layers:
    localrule: True
    input:
        best_layer_tables(),
