"""Figure: averaged CLS maps of three chosen heads per model (models as rows)."""

from vitscope import logs
from vitscope.attention import heads
from vitscope.io import tables
from vitscope.plots import attention, common

logs.to_file(snakemake.log[0])
models, quantiles = snakemake.params.models, snakemake.params.quantiles
maps = {m: tables.read_npz(p)["cls"] for m, p in zip(models, snakemake.input.maps, strict=True)}
rows = {m: tables.read_csv(p) for m, p in zip(models, snakemake.input.tables, strict=True)}
chosen = {m: heads.chosen_heads(rows[m], quantiles) for m in models}
entropy = {m: common.table_grid(rows[m], "entropy") for m in models}
span = {m: heads.candidate_blocks(rows[m]) for m in models}
lo, hi = snakemake.params.depth
title = (
    f"Averaged CLS attention, {snakemake.wildcards.dataset}: heads chosen by the normalised entropy "
    f"of their map among blocks ceil({lo:g} L) to ceil({hi:g} L) of L"
)
fig = attention.cls_heads_figure(maps, chosen, entropy, span, title=title, cmap=snakemake.params.cmap)
common.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
