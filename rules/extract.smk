# One forward pass per image: every block's products into one HDF5 dump; a dataset with
# `shards: K` (K > 1) is extracted by K extract_shard jobs and merged by merge_shards into the
# same dump (docs/dumps.md#sharding): ruleorder and merge_shards' wildcard constraint (the sharded
# datasets only) make exactly one rule produce each dump.


ruleorder: merge_shards > extract


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


# Shard {shard} of {shards}: whole batches of the fed order (vitscope.extract.shards.shard_range).
rule extract_shard:
    input:
        index="results/index/{dataset}.csv",
        checkpoint=checkpoint_input,
        annotations=object_annotations_input,
    output:
        # removed once merged (a failed job's siblings stay: only it reruns); --notemp keeps them
        shard=temp("results/shards/{model}/{dataset}/{shard}-of-{shards}.h5"),
    log:
        "logs/extract_shard/{model}/{dataset}/{shard}-of-{shards}.log",
    benchmark:
        "results/benchmarks/extract_shard/{model}/{dataset}/{shard}-of-{shards}.tsv"
    wildcard_constraints:
        shard="[1-9][0-9]*",
        shards="[1-9][0-9]*",
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


# The K shards of a dump merged into it, bit-identical to the dump of one extract job.
rule merge_shards:
    input:
        index="results/index/{dataset}.csv",
        shards=shard_files,
    output:
        dump="results/dumps/{model}/{dataset}.h5",
    log:
        "logs/merge_shards/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/merge_shards/{model}/{dataset}.tsv"
    wildcard_constraints:
        dataset=SHARDED,
    conda:
        "../envs/vitscope.yaml"
    resources:
        mem_mb=merge_mem_mb,
        runtime=merge_runtime,
    params:
        code=code_of("merge_shards"),
    script:
        "../workflow/scripts/merge_shards.py"
