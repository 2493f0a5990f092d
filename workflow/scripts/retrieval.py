"""Revisited Oxford/Paris retrieval (mAP, mP@k; Easy, Medium, Hard) of every block's CLS token, from one dump."""

from threadpoolctl import threadpool_limits

from vitscope import logs
from vitscope.io import datasets, dumps, tables
from vitscope.tasks import retrieval

logs.to_file(snakemake.log[0])
entry = snakemake.params.entry
gnd = datasets.read_gnd(entry["root"], entry["name"], key=f"datasets.{snakemake.wildcards.dataset}")
with dumps.open_dump(snakemake.input.dump) as dump:
    n = retrieval.check_dump(dump, gnd)
    tokens = dumps.require(dump, "tokens/cls").astype("float32")[...]  # whatever the storage dtype
with threadpool_limits(snakemake.threads):
    rows = retrieval.block_rows(
        tokens[:n], tokens[n:], gnd["gnd"], snakemake.wildcards.model,
        queries="cropped" if entry["crop_queries"] else "full",
    )
tables.write_csv(rows, snakemake.output.table, columns=retrieval.COLUMNS)
