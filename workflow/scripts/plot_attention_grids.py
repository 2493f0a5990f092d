"""Figures: attention grids (blocks x heads x queries) of each exemplar image of one model."""

from pathlib import Path

from vitscope import logs
from vitscope.attention import exemplars
from vitscope.io import tables
from vitscope.plots import attention, common

logs.to_file(snakemake.log[0])
arrays = tables.read_npz(snakemake.input.arrays)
out = Path(snakemake.output[0])
out.mkdir(parents=True, exist_ok=True)
cells = [None if r < 0 else (int(r), int(c)) for r, c in arrays["cells"]]
groups = exemplars.head_groups(arrays["maps"].shape[2], snakemake.params.heads_per_figure)
model, dataset = snakemake.wildcards.model, snakemake.wildcards.dataset
for e, position in enumerate(arrays["position"]):
    name = "/".join(Path(arrays["image_path"][e]).parts[-2:])
    for group in groups:
        title = (
            f"{model}: attention of image {position} of {dataset} ({name}), heads {group[0] + 1}-{group[1]}: "
            "the CLS query and five spatial queries"
        )
        fig = attention.attention_grid(
            arrays["image"][e], arrays["maps"][e, :, group[0] : group[1]], list(arrays["queries"]), cells,
            first_head=group[0], title=title, cmap=snakemake.params.cmap, alpha=snakemake.params.alpha,
        )
        stem = exemplars.figure_stem(int(position), group, groups)
        common.save(fig, [out / f"{stem}.pdf", out / f"{stem}.png"], dpi=snakemake.params.dpi)
