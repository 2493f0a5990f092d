"""Figures: attention distance per block for all models, and the per-head breakout."""

from vitscope import logs, plots, tables

logs.to_file(snakemake.log[0])
data = {m: tables.read_csv(p) for m, p in zip(snakemake.params.models, snakemake.input.tables, strict=True)}
units, dataset = snakemake.params.units, snakemake.wildcards.dataset
fig = plots.distance_by_block(data, units, title=f"Attention distance, {dataset} (dots: heads)")
plots.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
fig = plots.distance_heads(data, units, title=f"Attention distance per head, {dataset}")
plots.save(fig, [snakemake.output.heads_pdf, snakemake.output.heads_png], dpi=snakemake.params.dpi)
