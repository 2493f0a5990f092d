"""Figure: one clustering metric of every model against depth (a panel per representation), with its tidy CSV."""

from vitscope import feature_plots, features, logs, plots, tables

logs.to_file(snakemake.log[0])
metric, models = snakemake.wildcards.metric, snakemake.params.models
rows = [r for path in snakemake.input.tables for r in tables.read_csv(path) if r["metric"] == metric]
title = f"{snakemake.params.title}: {feature_plots.METRIC_TITLES[metric]}"
fig = feature_plots.clustering(rows, metric, models, reps=snakemake.params.representations, title=title)
plots.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
tables.write_csv(rows, snakemake.output.table, columns=features.CLUSTER_COLUMNS)
