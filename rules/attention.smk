# How the models attend: small tables and arrays derived from the dumps.


rule attention_maps:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        maps="results/attention/{model}/{dataset}/maps.npz",
    log:
        "logs/attention_maps/{model}/{dataset}.log",
    conda:
        "../envs/vitscope.yaml"
    params:
        code=code_of("attention_maps"),
    script:
        "../workflow/scripts/attention_maps.py"


rule plot_cls_maps:
    input:
        maps="results/attention/{model}/{dataset}/maps.npz",
    output:
        pdf="results/figures/cls_maps/{model}/{dataset}.pdf",
        png=figure_report("results/figures/cls_maps/{model}/{dataset}.png", "cls_maps"),
    log:
        "logs/plot_cls_maps/{model}/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    params:
        cmap=config["analyses"]["cls_maps"]["cmap"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_cls_maps"),
    script:
        "../workflow/scripts/plot_cls_maps.py"


rule attention_distance:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        table="results/attention/{model}/{dataset}/distance.csv",
    log:
        "logs/attention_distance/{model}/{dataset}.log",
    conda:
        "../envs/vitscope.yaml"
    params:
        code=code_of("attention_distance"),
    script:
        "../workflow/scripts/attention_distance.py"


rule plot_attention_distance:
    input:
        tables=expand("results/attention/{model}/{{dataset}}/distance.csv", model=MODELS),
    output:
        pdf="results/figures/attention_distance/{dataset}.pdf",
        png=figure_report("results/figures/attention_distance/{dataset}.png", "attention_distance"),
        heads_pdf="results/figures/attention_distance/{dataset}_heads.pdf",
        heads_png=figure_report("results/figures/attention_distance/{dataset}_heads.png", "attention_distance_heads"),
    log:
        "logs/plot_attention_distance/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    params:
        models=MODELS,
        units=config["analyses"]["attention_distance"]["units"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_attention_distance"),
    script:
        "../workflow/scripts/plot_attention_distance.py"


rule aaam:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        aaam="results/attention/{model}/{dataset}/aaam.npz",
    log:
        "logs/aaam/{model}/{dataset}.log",
    conda:
        "../envs/vitscope.yaml"
    params:
        code=code_of("aaam"),
    script:
        "../workflow/scripts/aaam.py"


rule offset_heads:
    input:
        aaam="results/attention/{model}/{dataset}/aaam.npz",
    output:
        table="results/attention/{model}/{dataset}/heads.csv",
    log:
        "logs/offset_heads/{model}/{dataset}.log",
    conda:
        "../envs/vitscope.yaml"
    params:
        thresholds=lookups.offset_thresholds(config),
        code=code_of("offset_heads"),
    script:
        "../workflow/scripts/offset_heads.py"


rule offset_heads_table:
    input:
        tables=expand("results/attention/{model}/{{dataset}}/heads.csv", model=MODELS),
    output:
        table="results/tables/offset_heads/{dataset}.csv",
    log:
        "logs/offset_heads_table/{dataset}.log",
    conda:
        "../envs/vitscope.yaml"
    params:
        models=MODELS,
        code=code_of("offset_heads_table"),
    script:
        "../workflow/scripts/offset_heads_table.py"


rule plot_aaam:
    input:
        aaam="results/attention/{model}/{dataset}/aaam.npz",
    output:
        pdf="results/figures/aaam/{model}/{dataset}.pdf",
        png=figure_report("results/figures/aaam/{model}/{dataset}.png", "aaam"),
    log:
        "logs/plot_aaam/{model}/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    params:
        cmap=config["analyses"]["offset_heads"]["cmap"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_aaam"),
    script:
        "../workflow/scripts/plot_aaam.py"


rule plot_offsets:
    input:
        table="results/attention/{model}/{dataset}/heads.csv",
    output:
        pdf="results/figures/offsets/{model}/{dataset}.pdf",
        png=figure_report("results/figures/offsets/{model}/{dataset}.png", "offsets"),
    log:
        "logs/plot_offsets/{model}/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    params:
        cmap=config["analyses"]["offset_heads"]["offset_cmap"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_offsets"),
    script:
        "../workflow/scripts/plot_offsets.py"


rule plot_offset_heads:
    input:
        tables=expand("results/attention/{model}/{{dataset}}/heads.csv", model=MODELS),
    output:
        pdf="results/figures/offset_heads/{dataset}.pdf",
        png=figure_report("results/figures/offset_heads/{dataset}.png", "offset_heads"),
    log:
        "logs/plot_offset_heads/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    params:
        models=MODELS,
        dpi=config["figures"]["dpi"],
        code=code_of("plot_offset_heads"),
    script:
        "../workflow/scripts/plot_offset_heads.py"


rule plot_offset_scatter:
    input:
        tables=expand("results/attention/{model}/{{dataset}}/heads.csv", model=MODELS),
    output:
        pdf="results/figures/offset_scatter/{dataset}.pdf",
        png=figure_report("results/figures/offset_scatter/{dataset}.png", "offset_scatter"),
    log:
        "logs/plot_offset_scatter/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    params:
        models=MODELS,
        units=config["analyses"]["offset_heads"]["scatter_units"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_offset_scatter"),
    script:
        "../workflow/scripts/plot_offset_scatter.py"


rule cls_heads:
    input:
        maps="results/attention/{model}/{dataset}/maps.npz",
    output:
        table="results/attention/{model}/{dataset}/cls_heads.csv",
    log:
        "logs/cls_heads/{model}/{dataset}.log",
    conda:
        "../envs/vitscope.yaml"
    params:
        depth=config["analyses"]["cls_heads"]["depth"],
        quantiles=config["analyses"]["cls_heads"]["quantiles"],
        code=code_of("cls_heads"),
    script:
        "../workflow/scripts/cls_heads.py"


rule plot_cls_heads:
    input:
        maps=expand("results/attention/{model}/{{dataset}}/maps.npz", model=MODELS),
        tables=expand("results/attention/{model}/{{dataset}}/cls_heads.csv", model=MODELS),
    output:
        pdf="results/figures/cls_heads/{dataset}.pdf",
        png=figure_report("results/figures/cls_heads/{dataset}.png", "cls_heads"),
    log:
        "logs/plot_cls_heads/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    params:
        models=MODELS,
        depth=config["analyses"]["cls_heads"]["depth"],
        quantiles=config["analyses"]["cls_heads"]["quantiles"],
        cmap=config["analyses"]["cls_heads"]["cmap"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_cls_heads"),
    script:
        "../workflow/scripts/plot_cls_heads.py"


rule saliency_iou:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
        annotations=coco_annotations_input,
    output:
        table="results/attention/{model}/{dataset}/saliency_iou.csv",
        per_image="results/attention/{model}/{dataset}/saliency_iou.npz",
    log:
        "logs/saliency_iou/{model}/{dataset}.log",
    conda:
        "../envs/vitscope.yaml"
    params:
        entry=index_entry,
        files=annotation_stamp,
        mass=config["analyses"]["saliency"]["mass"],
        threshold=config["analyses"]["saliency"]["mask_threshold"],
        code=code_of("saliency_iou"),
    script:
        "../workflow/scripts/saliency_iou.py"


rule plot_saliency_iou:
    input:
        tables=expand("results/attention/{model}/{{dataset}}/saliency_iou.csv", model=MODELS),
    output:
        pdf="results/figures/saliency_iou/{dataset}.pdf",
        png=figure_report("results/figures/saliency_iou/{dataset}.png", "saliency_iou"),
    log:
        "logs/plot_saliency_iou/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    params:
        models=MODELS,
        mass=config["analyses"]["saliency"]["mass"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_saliency_iou"),
    script:
        "../workflow/scripts/plot_saliency_iou.py"


rule attention_exemplars:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        arrays="results/attention/{model}/{dataset}/exemplars.npz",
    log:
        "logs/attention_exemplars/{model}/{dataset}.log",
    conda:
        "../envs/vitscope.yaml"
    params:
        code=code_of("attention_exemplars"),
    script:
        "../workflow/scripts/attention_exemplars.py"


rule plot_attention_grids:
    input:
        arrays="results/attention/{model}/{dataset}/exemplars.npz",
    output:
        figure_report(directory("results/figures/attention_grids/{model}/{dataset}"), "attention_grids"),
    log:
        "logs/plot_attention_grids/{model}/{dataset}.log",
    conda:
        "../envs/plots.yaml"
    params:
        heads_per_figure=config["analyses"]["attention_grids"]["heads_per_figure"],
        cmap=config["analyses"]["attention_grids"]["cmap"],
        alpha=config["analyses"]["attention_grids"]["alpha"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_attention_grids"),
    script:
        "../workflow/scripts/plot_attention_grids.py"
