"""Figures: detected head types of all models, and the AAAM centre-of-mass scatter."""

from vitscope import logs
from vitscope.io import tables
from vitscope.plots import common, heads

logs.to_file(snakemake.log[0])
data = {m: tables.read_csv(p) for m, p in zip(snakemake.params.models, snakemake.input.tables, strict=True)}
dataset = snakemake.wildcards.dataset
fig = heads.label_maps(data, title=f"Head types from the AAAM, {dataset}")
common.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
