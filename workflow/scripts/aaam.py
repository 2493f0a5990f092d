"""Aligned aggregated attention map (AAAM) of every block and head, from one dump."""

import torch

from vitscope import logs
from vitscope.attention import heads
from vitscope.io import dumps, tables

logs.to_file(snakemake.log[0])
with dumps.open_dump(snakemake.input.dump) as dump:
    geom = dumps.geometry(dump)
    sums = dump["attention"]
    aaam = heads.aaam(
        torch.from_numpy(dumps.require(dump, "attention/aligned_sum")[...]),
        count=int(sums.attrs["count"]),
        queries=int(sums.attrs["queries"]),
        zero_mass_rows=dumps.zero_mass_rows(dump),
    )
    images = int(sums.attrs["count"])
tables.write_npz(snakemake.output.aaam, aaam=aaam.numpy(), grid=geom["grid"], patch=geom["patch"], images=images)
