"""Attention distance per block and head (mean and std over images), from one dump."""

import torch

from vitscope import logs
from vitscope.attention import metrics
from vitscope.io import dumps, tables

logs.to_file(snakemake.log[0])
with dumps.open_dump(snakemake.input.dump) as dump:
    geom = dumps.geometry(dump)
    distance = torch.from_numpy(dumps.require(dump, "attention/distance")[...])
rows = metrics.distance_summary(distance, geom["grid"], geom["patch"][0])
tables.write_csv(rows, snakemake.output.table)
