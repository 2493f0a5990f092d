"""Figure: one clustering metric of every model against depth (a panel per representation), with its tidy CSV."""

from vitscope import logs
from vitscope.features import clustering
from vitscope.io import tables
from vitscope.plots import common, features

logs.to_file(snakemake.log[0])
metric, models = snakemake.wildcards.metric, snakemake.params.models
rows = [r for path in snakemake.input.tables for r in tables.read_csv(path) if r["metric"] == metric]
title = f"{snakemake.params.title}: {features.METRIC_TITLES[metric]}"
fig = features.clustering(rows, metric, models, reps=snakemake.params.representations, title=title)
common.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
tables.write_csv(rows, snakemake.output.table, columns=clustering.CLUSTER_COLUMNS)
