"""results/estimate.tsv (the table of vitscope.workflow.estimate), printed with its summary."""

from vitscope import logs
from vitscope.io import tables
from vitscope.workflow import estimate

logs.to_file(snakemake.log[0])
result = snakemake.params.estimate
tables.write_text(estimate.tsv(result["table"]), snakemake.output[0])
print(result["summary"] + f"Per dump: {snakemake.output[0]}", flush=True)
