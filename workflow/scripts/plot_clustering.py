"""Figure: one clustering metric of every model against depth (CLS and spatial side by side), with its tidy CSV."""

from vitscope import feature_plots, features, logs, plots, tables

logs.to_file(snakemake.log[0])
metric, dataset, models = snakemake.wildcards.metric, snakemake.wildcards.dataset, snakemake.params.models
rows = [r for path in snakemake.input.tables for r in tables.read_csv(path) if r["metric"] == metric]
title = f"KMeans clustering of {dataset} (k = number of classes): {feature_plots.METRIC_TITLES[metric]}"
fig = feature_plots.clustering(rows, metric, models, title=title)
plots.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
tables.write_csv(rows, snakemake.output.table, columns=features.CLUSTER_COLUMNS)
