"""SPair-71k keypoint transfer (PCK per block, per category and mean) of one model; the chosen pairs recorded."""

from threadpoolctl import threadpool_limits

from vitscope import logs
from vitscope.io import tables
from vitscope.tasks.spair import data as spair_data
from vitscope.tasks.spair import run as spair_run

logs.to_file(snakemake.log[0])
p = snakemake.params
pairs = spair_data.read_pairs(
    p.entry["root"], p.entry["split"], p.pairs_per_category, key=f"datasets.{snakemake.wildcards.dataset}"
)
with threadpool_limits(snakemake.threads):
    rows, per_category = spair_run.run(
        snakemake.wildcards.model, p.model, pairs, p.alphas, p.image_size, p.renormalize, p.batch_size,
        p.max_images, p.device, snakemake.threads,
    )
tables.write_csv(spair_data.pair_rows(pairs, p.pairs_per_category), snakemake.output.pairs,
                 columns=spair_data.PAIR_COLUMNS)
tables.write_csv(per_category, snakemake.output.categories, columns=spair_run.CATEGORY_COLUMNS)
tables.write_csv(rows, snakemake.output.table, columns=spair_run.COLUMNS)
