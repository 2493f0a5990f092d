"""Figure: AAAM offset of every block and head of one model, offset-local heads marked."""

from vitscope import logs
from vitscope.io import tables
from vitscope.plots import common, heads

logs.to_file(snakemake.log[0])
rows = tables.read_csv(snakemake.input.table)
title = f"{snakemake.wildcards.model}: AAAM offset, {snakemake.wildcards.dataset}"
fig = heads.offset_heatmap(rows, title, cmap=snakemake.params.cmap)
common.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
