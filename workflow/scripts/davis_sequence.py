"""DAVIS label propagation of one sequence with every block: palette PNG masks and per-object J / F."""

from vitscope import logs, tables, vos
from vitscope.tasks import davis

logs.to_file(snakemake.log[0])
p = snakemake.params
rows = vos.run_sequence(
    model=snakemake.wildcards.model,
    model_entry=p.model,
    dataset=snakemake.wildcards.dataset,
    dataset_entry=p.entry,
    sequence=snakemake.wildcards.sequence,
    output=snakemake.output.masks,
    options=vos.DavisOptions(**p.options),
    device=p.device,
    threads=snakemake.threads,
)
tables.write_csv(rows, snakemake.output.table, columns=davis.OBJECT_COLUMNS)
