"""Figure: a downstream task's score against block for every model (k-NN, retrieval, SPair), with its tidy CSV."""

from vitscope import logs
from vitscope.io import tables
from vitscope.plots import common, tasks

logs.to_file(snakemake.log[0])
task, dataset = snakemake.wildcards.task, snakemake.wildcards.dataset
rows = [r for path in snakemake.input.tables for r in tables.read_csv(path)]
fig = tasks.by_block(rows, task, snakemake.params.models, dataset)
common.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
tables.write_csv(rows, snakemake.output.table, columns=list(rows[0]))
