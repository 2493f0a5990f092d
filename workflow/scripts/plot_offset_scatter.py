"""Figure: AAAM centre of mass (cx, cy) of every head of every model."""

from vitscope import logs
from vitscope.io import tables
from vitscope.plots import common, heads

logs.to_file(snakemake.log[0])
data = {m: tables.read_csv(p) for m, p in zip(snakemake.params.models, snakemake.input.tables, strict=True)}
title = f"AAAM centre of mass of every head, {snakemake.wildcards.dataset}"
fig = heads.offset_scatter(data, units=snakemake.params.units, title=title)
common.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
