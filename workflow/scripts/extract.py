"""Extract one dump (rule extract), or one shard of it (rule extract_shard): one forward pass
per image, every block recorded."""

from vitscope import logs
from vitscope.extract import run

progress = logs.to_file(snakemake.log[0])
shard = snakemake.wildcards.get("shard")
run.extract_dump(
    model=snakemake.wildcards.model,
    dataset=snakemake.wildcards.dataset,
    model_entry=snakemake.params.model,
    index=snakemake.input.index,
    output=snakemake.output[0],
    options=run.ExtractOptions(
        products=tuple(snakemake.params.products),
        batch_size=snakemake.params.batch_size,
        cka_batch_size=snakemake.params.cka_batch_size,
        order_seed=snakemake.params.order_seed,
        exemplars=snakemake.params.exemplars,
        parity_tolerance=snakemake.params.parity_tolerance,
        precision=snakemake.params.precision,
        attention=snakemake.params.attention,
        num_workers=snakemake.params.num_workers,
        tokens=snakemake.params.token_storage["tokens"],
        token_dtype=snakemake.params.token_storage["dtype"],
    ),
    device=snakemake.params.device,
    threads=snakemake.threads,
    progress=progress,
    coco=snakemake.params.coco,
    shard=(int(shard), int(snakemake.wildcards.shards)) if shard else None,
)
