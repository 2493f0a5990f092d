"""Figure: last-block CKA of every model pair (cls / spatial / all), with its tidy CSV."""

from vitscope import logs
from vitscope.features import cka
from vitscope.io import tables
from vitscope.io.dumps import REPRESENTATIONS
from vitscope.plots import common, features

logs.to_file(snakemake.log[0])
models, dataset = snakemake.params.models, snakemake.wildcards.dataset
pairs = {tuple(p): tables.read_npz(f) for p, f in zip(snakemake.params.pairs, snakemake.input.pairs, strict=True)}
matrix = cka.last_layer_matrix(pairs, models)
first = next(iter(pairs.values()))
title = f"CKA of the last block outputs, {dataset}: {first['images']} images in minibatches of {first['batch']}"
fig = features.last_layer(matrix, models, REPRESENTATIONS, title=title, cmap=snakemake.params.cmap)
common.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
tables.write_csv(cka.last_layer_rows(pairs), snakemake.output.table, columns=cka.CKA_COLUMNS)
