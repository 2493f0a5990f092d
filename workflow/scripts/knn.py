"""Weighted k-NN (DINO protocol) of every block's CLS token: memory bank and queries from two dumps."""

import torch
from threadpoolctl import threadpool_limits

from vitscope import logs
from vitscope.io import dumps, tables
from vitscope.tasks import knn

logs.to_file(snakemake.log[0])
p = snakemake.params
if p.device.startswith("cuda") and not torch.cuda.is_available():
    raise SystemExit(f"k-NN: analyses.knn.device is '{p.device}' but this job sees no CUDA device")
torch.set_num_threads(snakemake.threads)
with dumps.open_dump(snakemake.input.train) as train, dumps.open_dump(snakemake.input.val) as val:
    labels = knn.check_labels(train, val)
    with threadpool_limits(snakemake.threads):
        rows = knn.block_rows(
            dumps.require(train, "tokens/cls"), labels["train"], dumps.require(val, "tokens/cls"), labels["val"],
            snakemake.wildcards.model, labels["num_classes"], p.ks, p.temperature, p.query_chunk, p.bank_chunk,
            p.device,
        )
tables.write_csv(rows, snakemake.output.table, columns=knn.COLUMNS)
