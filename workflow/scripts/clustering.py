"""KMeans clustering (k = number of classes) of every block's CLS and mean spatial token, from one dump."""

from threadpoolctl import threadpool_limits

from vitscope import dumps, features, logs, tables

logs.to_file(snakemake.log[0])
with dumps.open_dump(snakemake.input.dump) as dump:
    values = {rep: dumps.require(dump, name)[...] for rep, name in features.CLUSTER_FEATURES.items()}
    labels = dumps.require(dump, "images/label")[...]
with threadpool_limits(snakemake.threads):
    rows = features.clustering_rows(
        values, labels, snakemake.wildcards.model, seed=snakemake.params.seed, n_init=snakemake.params.n_init
    )
tables.write_csv(rows, snakemake.output.table, columns=features.CLUSTER_COLUMNS)
