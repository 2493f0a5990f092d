"""Figure: CLS attention saliency IoU per block, all models (best head once; per-image best head)."""

from vitscope import logs
from vitscope.io import tables
from vitscope.plots import attention, common

logs.to_file(snakemake.log[0])
data = {m: tables.read_csv(p) for m, p in zip(snakemake.params.models, snakemake.input.tables, strict=True)}
images = {int(rows[0]["images"]) for rows in data.values()}
title = f"CLS attention saliency, {snakemake.wildcards.dataset} ({'/'.join(map(str, sorted(images)))} images)"
fig = attention.saliency_by_block(data, mass=snakemake.params.mass, title=title)
common.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
