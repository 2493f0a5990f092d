"""Offset and offset-local head detection for every block and head of one model."""

import torch

from vitscope import logs
from vitscope.attention import heads
from vitscope.io import tables

logs.to_file(snakemake.log[0])
aaam = torch.from_numpy(tables.read_npz(snakemake.input.aaam)["aaam"])
thresholds = heads.Thresholds(**snakemake.params.thresholds)
tables.write_csv(heads.heads_table(aaam, thresholds), snakemake.output.table, columns=heads.HEAD_COLUMNS)
