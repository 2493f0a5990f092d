"""Figure: AAAM offset of every block and head of one model, offset-local heads marked."""

from vitscope import head_plots, logs, plots, tables

logs.to_file(snakemake.log[0])
rows = tables.read_csv(snakemake.input.table)
title = f"{snakemake.wildcards.model}: AAAM offset, {snakemake.wildcards.dataset}"
fig = head_plots.offset_heatmap(rows, title, cmap=snakemake.params.cmap)
plots.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
