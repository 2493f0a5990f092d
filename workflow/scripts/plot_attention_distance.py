"""Figures: attention distance per block for all models, and the per-head breakout."""

from vitscope import logs
from vitscope.io import tables
from vitscope.plots import attention, common

logs.to_file(snakemake.log[0])
data = {m: tables.read_csv(p) for m, p in zip(snakemake.params.models, snakemake.input.tables, strict=True)}
units, dataset = snakemake.params.units, snakemake.wildcards.dataset
fig = attention.distance_by_block(data, units, title=f"Attention distance, {dataset} (dots: heads)")
common.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
fig = attention.distance_heads(data, units, title=f"Attention distance per head, {dataset}")
common.save(fig, [snakemake.output.heads_pdf, snakemake.output.heads_png], dpi=snakemake.params.dpi)
