"""Index a dataset: the ordered image list (path, label, class) its dumps cover."""

from vitscope import logs
from vitscope.io import datasets

logs.to_file(snakemake.log[0])
entries = datasets.index_dataset(snakemake.wildcards.dataset, snakemake.params.entry, synthetic_root=snakemake.input)
datasets.write_index(entries, snakemake.output[0])
