"""Minibatch CKA of every block and LayerNorm output of model A against model B, from their two dumps."""

from vitscope import logs
from vitscope.features import cka
from vitscope.io import dumps, tables

logs.to_file(snakemake.log[0])
with dumps.open_dump(snakemake.input.dump_a) as dump_a, dumps.open_dump(snakemake.input.dump_b) as dump_b:
    arrays = cka.pair_cka(dump_a, dump_b)
tables.write_npz(snakemake.output.cka, **arrays)
