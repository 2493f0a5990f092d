"""CLS attention saliency: IoU with the object masks per image, block and head, from one dump."""

from vitscope import logs
from vitscope.attention import saliency
from vitscope.io import datasets, dumps, tables

logs.to_file(snakemake.log[0])
entry, dataset = snakemake.params.entry, snakemake.wildcards.dataset
coco = datasets.load_coco(entry["annotations"], key=f"datasets.{dataset}")
with dumps.open_dump(snakemake.input.dump) as dump:
    ious, masks = saliency.dump_iou(
        dump, coco, entry["root"], snakemake.params.mass, snakemake.params.threshold, entry["annotations"]
    )
empty = ~masks.reshape(len(masks), -1).any(axis=1)
rows = saliency.summary_rows(ious, snakemake.wildcards.model, empty)
tables.write_csv(rows, snakemake.output.table, columns=saliency.COLUMNS)
tables.write_npz(snakemake.output.per_image, iou=ious, masks=masks)
