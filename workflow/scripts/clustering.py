"""KMeans clustering (k = number of classes) of every block's CLS and mean spatial token, from one dump."""

from threadpoolctl import threadpool_limits

from vitscope import logs
from vitscope.features import clustering
from vitscope.io import dumps, tables

logs.to_file(snakemake.log[0])
with dumps.open_dump(snakemake.input.dump) as dump:
    # float32 whatever the storage dtype (datasets.<name>.token_dtype)
    values = {
        rep: dumps.require(dump, name).astype("float32")[...] for rep, name in clustering.CLUSTER_FEATURES.items()
    }
    labels = dumps.require(dump, "images/label")[...]
with threadpool_limits(snakemake.threads):
    rows = clustering.clustering_rows(
        values, labels, snakemake.wildcards.model, seed=snakemake.params.seed, n_init=snakemake.params.n_init
    )
tables.write_csv(rows, snakemake.output.table, columns=clustering.CLUSTER_COLUMNS)
