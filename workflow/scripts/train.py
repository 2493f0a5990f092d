"""Train one model's checkpoint as its `train` entry says (docs/demo.md)."""

from vitscope import logs
from vitscope.training import run

progress = logs.to_file(snakemake.log[0])
run.train_checkpoint(
    alias=snakemake.wildcards.model,
    model_entry=snakemake.params.model,
    train_entry=snakemake.params.train,
    index=snakemake.input.index if snakemake.input.get("index") else None,
    checkpoint=snakemake.output.checkpoint,
    losses=snakemake.output.losses,
    threads=snakemake.threads,
    progress=progress,
)
