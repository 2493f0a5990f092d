"""Attention maps of the CLS and five spatial queries of every exemplar image, from one dump."""

from vitscope import dumps, exemplars, logs, tables

logs.to_file(snakemake.log[0])
with dumps.open_dump(snakemake.input.dump) as dump:
    arrays = exemplars.dump_exemplars(dump)
tables.write_npz(snakemake.output.arrays, **arrays)
