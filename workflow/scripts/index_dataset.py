"""Index a dataset: the ordered image list (path, label, class) its dumps cover."""

from vitscope import data, logs

logs.to_file(snakemake.log[0])
entries = data.index_dataset(snakemake.wildcards.dataset, snakemake.params.entry, synthetic_root=snakemake.input)
data.write_index(entries, snakemake.output[0])
