# Training: the demo's models taught differently on its synthetic images (docs/demo.md).
# Each writes an ordinary checkpoint that extraction loads like a downloaded one.


rule train:
    input:
        index=train_index,
    output:
        checkpoint="results/checkpoints/{model}.safetensors",
        losses="results/train/{model}/loss.csv",
    log:
        "logs/train/{model}.log",
    benchmark:
        "results/benchmarks/train/{model}.tsv"
    conda:
        "../envs/vitscope.yaml"
    threads: 1
    params:
        model=model_entry,
        train=train_entry,
        images=train_images,
        code=code_of("train"),
    script:
        "../workflow/scripts/train.py"


rule plot_train_loss:
    input:
        losses=expand("results/train/{model}/loss.csv", model=TRAINED),
    output:
        pdf="results/figures/train/loss.pdf",
        png=figure_report("results/figures/train/loss.png", "train_loss"),
    log:
        "logs/plot_train_loss/all.log",
    conda:
        "../envs/plots.yaml"
    params:
        models=TRAINED,
        dpi=config["figures"]["dpi"],
        code=code_of("plot_train_loss"),
    script:
        "../workflow/scripts/plot_train_loss.py"
