"""Entropy of every averaged CLS map and the heads chosen for the cross-model CLS figure."""

import torch

from vitscope import logs
from vitscope.attention import heads
from vitscope.io import tables

logs.to_file(snakemake.log[0])
cls = torch.from_numpy(tables.read_npz(snakemake.input.maps)["cls"])
rows = heads.cls_heads_table(cls, depth=snakemake.params.depth, quantiles=snakemake.params.quantiles)
tables.write_csv(rows, snakemake.output.table, columns=heads.CLS_HEAD_COLUMNS)
