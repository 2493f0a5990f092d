"""Figure: full-depth CKA (every LayerNorm output) of one model pair, with its tidy CSV."""

from vitscope import logs
from vitscope.features import cka as cka_module
from vitscope.io import tables
from vitscope.plots import common, features

logs.to_file(snakemake.log[0])
a, b, dataset = snakemake.wildcards.model_a, snakemake.wildcards.model_b, snakemake.wildcards.dataset
arrays = tables.read_npz(snakemake.input.cka)
cka = {rep: arrays[f"norms_{rep}"] for rep in snakemake.params.representations}
batches = f"{arrays['images']} images in minibatches of {arrays['batch']}"
title = f"Full-depth CKA, {dataset}: {a} (rows) vs {b} (columns), {batches}"
fig = features.full_depth(cka, a, b, title=title, cmap=snakemake.params.cmap)
common.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
rows = [r for r in cka_module.cka_rows(arrays, a, b, "norms") if r["representation"] in cka]
tables.write_csv(rows, snakemake.output.table, columns=cka_module.CKA_COLUMNS)
