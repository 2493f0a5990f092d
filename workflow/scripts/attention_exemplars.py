"""Attention maps of the CLS and five spatial queries of every exemplar image, from one dump."""

from vitscope import logs
from vitscope.attention import exemplars
from vitscope.io import dumps, tables

logs.to_file(snakemake.log[0])
with dumps.open_dump(snakemake.input.dump) as dump:
    arrays = exemplars.dump_exemplars(dump)
tables.write_npz(snakemake.output.arrays, **arrays)
