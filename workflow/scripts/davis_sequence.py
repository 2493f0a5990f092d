"""DAVIS label propagation of one sequence with every block: palette PNG masks and per-object J / F."""

from vitscope import logs
from vitscope.io import tables
from vitscope.tasks.davis import evaluation, propagation

logs.to_file(snakemake.log[0])
p = snakemake.params
rows = propagation.run_sequence(
    model=snakemake.wildcards.model,
    model_entry=p.model,
    dataset=snakemake.wildcards.dataset,
    dataset_entry=p.entry,
    sequence=snakemake.wildcards.sequence,
    output=snakemake.output.masks,
    options=propagation.DavisOptions(**p.options),
    device=p.device,
    threads=snakemake.threads,
)
tables.write_csv(rows, snakemake.output.table, columns=evaluation.OBJECT_COLUMNS)
