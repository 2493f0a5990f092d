"""Train one model's checkpoint as its `train` entry says (docs/demo.md)."""

from vitscope import logs
from vitscope.training import run

progress = logs.to_file(snakemake.log[0])
index = snakemake.input.get("index") or []  # one index CSV; none for objective random
index = [index] if isinstance(index, str) else list(index)
run.train_checkpoint(
    alias=snakemake.wildcards.model,
    model_entry=snakemake.params.model,
    train_entry=snakemake.params.train,
    index=index[0] if index else None,
    checkpoint=snakemake.output.checkpoint,
    losses=snakemake.output.losses,
    threads=snakemake.threads,
    progress=progress,
)
