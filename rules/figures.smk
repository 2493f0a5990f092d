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
