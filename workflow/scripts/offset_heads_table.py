"""All models' offset / offset-local head tables in one CSV."""

from vitscope import logs
from vitscope.attention import heads
from vitscope.io import tables

logs.to_file(snakemake.log[0])
data = {m: tables.read_csv(p) for m, p in zip(snakemake.params.models, snakemake.input.tables, strict=True)}
tables.write_csv(heads.with_model(data), snakemake.output.table, columns=["model", *heads.HEAD_COLUMNS])
