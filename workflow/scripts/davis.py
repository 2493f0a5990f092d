"""DAVIS J, F and J&F per block, every object of every sequence pooled; masks laid out per block."""

from vitscope import logs
from vitscope.io import tables
from vitscope.tasks.davis import evaluation, propagation

logs.to_file(snakemake.log[0])
rows = propagation.pool_tables(snakemake.input.tables)
tables.write_csv(rows, snakemake.output.table, columns=evaluation.COLUMNS)
propagation.link_results(snakemake.input.masks, snakemake.output.masks)
