"""Figure: aligned aggregated attention map of every block and head of one model."""

from vitscope import logs
from vitscope.io import tables
from vitscope.plots import attention, common

logs.to_file(snakemake.log[0])
data = tables.read_npz(snakemake.input.aaam)
gh, gw = (int(v) for v in data["grid"])
title = (
    f"{snakemake.wildcards.model}: aligned aggregated attention (AAAM), "
    f"{snakemake.wildcards.dataset} ({int(data['images'])} images, {gh}x{gw} tokens)"
)
fig = attention.aaam_grid(data["aaam"], title, cmap=snakemake.params.cmap)
common.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
