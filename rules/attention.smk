# How the models attend: small tables and arrays derived from the dumps.


rule attention_maps:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        maps="results/attention/{model}/{dataset}/maps.npz",
    params:
        code=code_of("attention_maps"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/attention_maps/{model}/{dataset}.log",
    script:
        "../workflow/scripts/attention_maps.py"


rule plot_cls_maps:
    input:
        maps="results/attention/{model}/{dataset}/maps.npz",
    output:
        pdf="results/figures/cls_maps/{model}/{dataset}.pdf",
        png=figure_report("results/figures/cls_maps/{model}/{dataset}.png", "cls_maps"),
    params:
        cmap=config["analyses"]["cls_maps"]["cmap"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_cls_maps"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_cls_maps/{model}/{dataset}.log",
    script:
        "../workflow/scripts/plot_cls_maps.py"


rule attention_distance:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        table="results/attention/{model}/{dataset}/distance.csv",
    params:
        code=code_of("attention_distance"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/attention_distance/{model}/{dataset}.log",
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
    params:
        models=MODELS,
        units=config["analyses"]["attention_distance"]["units"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_attention_distance"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_attention_distance/{dataset}.log",
    script:
        "../workflow/scripts/plot_attention_distance.py"


rule aaam:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        aaam="results/attention/{model}/{dataset}/aaam.npz",
    params:
        code=code_of("aaam"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/aaam/{model}/{dataset}.log",
    script:
        "../workflow/scripts/aaam.py"


rule offset_heads:
    input:
        aaam="results/attention/{model}/{dataset}/aaam.npz",
    output:
        table="results/attention/{model}/{dataset}/heads.csv",
    params:
        thresholds=offset_thresholds(),
        code=code_of("offset_heads"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/offset_heads/{model}/{dataset}.log",
    script:
        "../workflow/scripts/offset_heads.py"


rule offset_heads_table:
    input:
        tables=expand("results/attention/{model}/{{dataset}}/heads.csv", model=MODELS),
    output:
        table="results/tables/offset_heads/{dataset}.csv",
    params:
        models=MODELS,
        code=code_of("offset_heads_table"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/offset_heads_table/{dataset}.log",
    script:
        "../workflow/scripts/offset_heads_table.py"


rule plot_aaam:
    input:
        aaam="results/attention/{model}/{dataset}/aaam.npz",
    output:
        pdf="results/figures/aaam/{model}/{dataset}.pdf",
        png=figure_report("results/figures/aaam/{model}/{dataset}.png", "aaam"),
    params:
        cmap=config["analyses"]["offset_heads"]["cmap"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_aaam"),
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
        png=figure_report("results/figures/offsets/{model}/{dataset}.png", "offsets"),
    params:
        cmap=config["analyses"]["offset_heads"]["offset_cmap"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_offsets"),
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
        png=figure_report("results/figures/offset_heads/{dataset}.png", "offset_heads"),
    params:
        models=MODELS,
        dpi=config["figures"]["dpi"],
        code=code_of("plot_offset_heads"),
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
        png=figure_report("results/figures/offset_scatter/{dataset}.png", "offset_scatter"),
    params:
        models=MODELS,
        units=config["analyses"]["offset_heads"]["scatter_units"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_offset_scatter"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_offset_scatter/{dataset}.log",
    script:
        "../workflow/scripts/plot_offset_scatter.py"


rule cls_heads:
    input:
        maps="results/attention/{model}/{dataset}/maps.npz",
    output:
        table="results/attention/{model}/{dataset}/cls_heads.csv",
    params:
        depth=config["analyses"]["cls_heads"]["depth"],
        quantiles=config["analyses"]["cls_heads"]["quantiles"],
        code=code_of("cls_heads"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/cls_heads/{model}/{dataset}.log",
    script:
        "../workflow/scripts/cls_heads.py"


rule plot_cls_heads:
    input:
        maps=expand("results/attention/{model}/{{dataset}}/maps.npz", model=MODELS),
        tables=expand("results/attention/{model}/{{dataset}}/cls_heads.csv", model=MODELS),
    output:
        pdf="results/figures/cls_heads/{dataset}.pdf",
        png=figure_report("results/figures/cls_heads/{dataset}.png", "cls_heads"),
    params:
        models=MODELS,
        depth=config["analyses"]["cls_heads"]["depth"],
        quantiles=config["analyses"]["cls_heads"]["quantiles"],
        cmap=config["analyses"]["cls_heads"]["cmap"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_cls_heads"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_cls_heads/{dataset}.log",
    script:
        "../workflow/scripts/plot_cls_heads.py"


rule saliency_iou:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
        annotations=coco_annotations_input,
    output:
        table="results/attention/{model}/{dataset}/saliency_iou.csv",
        per_image="results/attention/{model}/{dataset}/saliency_iou.npz",
    params:
        entry=dataset_entry,
        files=annotation_stamp,
        mass=config["analyses"]["saliency"]["mass"],
        threshold=config["analyses"]["saliency"]["mask_threshold"],
        code=code_of("saliency_iou"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/saliency_iou/{model}/{dataset}.log",
    script:
        "../workflow/scripts/saliency_iou.py"


rule plot_saliency_iou:
    input:
        tables=expand("results/attention/{model}/{{dataset}}/saliency_iou.csv", model=MODELS),
    output:
        pdf="results/figures/saliency_iou/{dataset}.pdf",
        png=figure_report("results/figures/saliency_iou/{dataset}.png", "saliency_iou"),
    params:
        models=MODELS,
        mass=config["analyses"]["saliency"]["mass"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_saliency_iou"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_saliency_iou/{dataset}.log",
    script:
        "../workflow/scripts/plot_saliency_iou.py"


rule attention_exemplars:
    input:
        dump="results/dumps/{model}/{dataset}.h5",
    output:
        arrays="results/attention/{model}/{dataset}/exemplars.npz",
    params:
        code=code_of("attention_exemplars"),
    conda:
        "../envs/vitscope.yaml"
    log:
        "logs/attention_exemplars/{model}/{dataset}.log",
    script:
        "../workflow/scripts/attention_exemplars.py"


rule plot_attention_grids:
    input:
        arrays="results/attention/{model}/{dataset}/exemplars.npz",
    output:
        figure_report(directory("results/figures/attention_grids/{model}/{dataset}"), "attention_grids"),
    params:
        heads_per_figure=config["analyses"]["attention_grids"]["heads_per_figure"],
        cmap=config["analyses"]["attention_grids"]["cmap"],
        alpha=config["analyses"]["attention_grids"]["alpha"],
        dpi=config["figures"]["dpi"],
        code=code_of("plot_attention_grids"),
    conda:
        "../envs/plots.yaml"
    log:
        "logs/plot_attention_grids/{model}/{dataset}.log",
    script:
        "../workflow/scripts/plot_attention_grids.py"
