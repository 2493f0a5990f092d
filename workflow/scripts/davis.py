"""DAVIS J, F and J&F per block, every object of every sequence pooled; masks laid out per block."""

from vitscope import logs, tables, vos
from vitscope.tasks import davis

logs.to_file(snakemake.log[0])
rows = vos.pool_tables(snakemake.input.tables)
tables.write_csv(rows, snakemake.output.table, columns=davis.COLUMNS)
vos.link_results(snakemake.input.masks, snakemake.output.masks)
