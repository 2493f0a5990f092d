"""Figure: AAAM centre of mass (cx, cy) of every head of every model."""

from vitscope import head_plots, logs, plots, tables

logs.to_file(snakemake.log[0])
data = {m: tables.read_csv(p) for m, p in zip(snakemake.params.models, snakemake.input.tables, strict=True)}
title = f"AAAM centre of mass of every head, {snakemake.wildcards.dataset}"
fig = head_plots.offset_scatter(data, units=snakemake.params.units, title=title)
plots.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
