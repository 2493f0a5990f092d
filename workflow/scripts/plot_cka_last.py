"""Figure: last-block CKA of every model pair (cls / spatial / all), with its tidy CSV."""

from vitscope import feature_plots, features, logs, plots, tables
from vitscope.dumps import REPRESENTATIONS

logs.to_file(snakemake.log[0])
models, dataset = snakemake.params.models, snakemake.wildcards.dataset
pairs = {tuple(p): tables.read_npz(f) for p, f in zip(snakemake.params.pairs, snakemake.input.pairs, strict=True)}
matrix = features.last_layer_matrix(pairs, models)
fig = feature_plots.last_layer(
    matrix, models, REPRESENTATIONS, title=f"CKA of the last block outputs, {dataset}", cmap=snakemake.params.cmap
)
plots.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
tables.write_csv(features.last_layer_rows(pairs), snakemake.output.table, columns=features.CKA_COLUMNS)
