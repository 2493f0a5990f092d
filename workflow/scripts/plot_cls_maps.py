"""Figure: averaged CLS attention map of every block and head of one model."""

from vitscope import logs
from vitscope.io import tables
from vitscope.plots import attention, common

logs.to_file(snakemake.log[0])
maps = tables.read_npz(snakemake.input.maps)
title = (
    f"{snakemake.wildcards.model}: averaged CLS attention, "
    f"{snakemake.wildcards.dataset} ({int(maps['images'])} images)"
)
fig = attention.map_grid(maps["cls"], title, cmap=snakemake.params.cmap)
common.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
