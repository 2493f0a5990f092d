# One forward pass per image: every block's products into one HDF5 dump.


rule extract:
    input:
        index="results/index/{dataset}.csv",
        checkpoint=checkpoint_input,
        annotations=object_annotations_input,
    output:
        dump="results/dumps/{model}/{dataset}.h5",
    log:
        "logs/extract/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/extract/{model}/{dataset}.tsv"
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
        images=indexed_images,
        products=products,
        token_storage=token_storage,
        device=config["extract"]["device"],
        batch_size=config["extract"]["batch_size"],
        cka_batch_size=config["extract"]["cka_batch_size"],
        order_seed=config["extract"]["order_seed"],
        exemplars=config["extract"]["exemplars"],
        parity_tolerance=config["extract"]["parity_tolerance"],
        precision=config["extract"]["precision"],
        attention=config["extract"]["attention"],
        num_workers=config["extract"]["num_workers"],
        coco=object_source,
        code=code_of("extract"),
    script:
        "../workflow/scripts/extract.py"
