# Figures: read small tables and arrays only, so a plotting change never re-extracts.


rule plot_cls_maps:
    input:
        maps="results/attention/{model}/{dataset}/maps.npz",
    output:
        pdf="results/figures/cls_maps/{model}/{dataset}.pdf",
        png="results/figures/cls_maps/{model}/{dataset}.png",
    params:
        cmap=config["analyses"]["cls_maps"]["cmap"],
        dpi=config["figures"]["dpi"],
        code=code_version("plots"),
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
        png="results/figures/attention_distance/{dataset}.png",
        heads_pdf="results/figures/attention_distance/{dataset}_heads.pdf",
        heads_png="results/figures/attention_distance/{dataset}_heads.png",
    params:
        models=MODELS,
        units=config["analyses"]["attention_distance"]["units"],
        dpi=config["figures"]["dpi"],
        code=code_version("plots"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_attention_distance/{dataset}.log",
    script:
        "../workflow/scripts/plot_attention_distance.py"


rule plot_saliency_iou:
    input:
        tables=expand("results/attention/{model}/{{dataset}}/saliency_iou.csv", model=MODELS),
    output:
        pdf="results/figures/saliency_iou/{dataset}.pdf",
        png="results/figures/saliency_iou/{dataset}.png",
    params:
        models=MODELS,
        mass=config["analyses"]["saliency"]["mass"],
        dpi=config["figures"]["dpi"],
        code=code_version("plots"),
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
        directory("results/figures/attention_grids/{model}/{dataset}"),
    params:
        heads_per_figure=config["analyses"]["attention_grids"]["heads_per_figure"],
        cmap=config["analyses"]["attention_grids"]["cmap"],
        alpha=config["analyses"]["attention_grids"]["alpha"],
        dpi=config["figures"]["dpi"],
        code=code_version("plots", "exemplars"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_attention_grids/{model}/{dataset}.log",
    script:
        "../workflow/scripts/plot_attention_grids.py"


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
