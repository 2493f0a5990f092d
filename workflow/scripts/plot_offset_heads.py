"""Figures: detected head types of all models, and the AAAM centre-of-mass scatter."""

from vitscope import head_plots, logs, plots, tables

logs.to_file(snakemake.log[0])
data = {m: tables.read_csv(p) for m, p in zip(snakemake.params.models, snakemake.input.tables, strict=True)}
dataset = snakemake.wildcards.dataset
fig = head_plots.label_maps(data, title=f"Head types from the AAAM, {dataset}")
plots.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
