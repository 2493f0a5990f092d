"""Merge the shard files of one dump into it (docs/dumps.md#sharding)."""

from vitscope import logs
from vitscope.extract import merge

logs.to_file(snakemake.log[0])
merge.merge_index(snakemake.input.shards, snakemake.output.dump, snakemake.input.index)
