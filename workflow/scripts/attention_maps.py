"""Averaged CLS and spatial-query attention maps per block and head, from one dump."""

import torch

from vitscope import logs
from vitscope.attention import metrics
from vitscope.io import dumps, tables

logs.to_file(snakemake.log[0])
with dumps.open_dump(snakemake.input.dump) as dump:
    geom = dumps.geometry(dump)
    sums = dump["attention"]
    cls, spatial = metrics.averaged_maps(
        torch.from_numpy(dumps.require(dump, "attention/cls_sum")[...]),
        torch.from_numpy(dumps.require(dump, "attention/spatial_query_sum")[...]),
        count=int(sums.attrs["count"]),
        queries=int(sums.attrs["queries"]),
        grid=geom["grid"],
        prefix=geom["prefix"],
        zero_mass_rows=dumps.zero_mass_rows(dump),
    )
    images = int(sums.attrs["count"])
tables.write_npz(snakemake.output.maps, cls=cls.numpy(), spatial=spatial.numpy(), images=images)
