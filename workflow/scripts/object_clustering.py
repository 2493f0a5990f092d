"""KMeans clustering (k = categories present) of every block's object features, from one COCO dump."""

from threadpoolctl import threadpool_limits

from vitscope import logs
from vitscope.features import clustering
from vitscope.io import dumps, tables

logs.to_file(snakemake.log[0])
with dumps.open_dump(snakemake.input.dump) as dump, threadpool_limits(snakemake.threads):
    rows = clustering.object_clustering_rows(
        dump, snakemake.wildcards.model, seed=snakemake.params.seed, n_init=snakemake.params.n_init
    )
tables.write_csv(rows, snakemake.output.table, columns=clustering.CLUSTER_COLUMNS)
