"""The best block per model and task ("No single winner") as CSV, Markdown and LaTeX."""

from vitscope import logs, tables
from vitscope.tasks import table

logs.to_file(snakemake.log[0])
tasks = {
    table.Task(t["label"], t["select"], t["scale"], t["digits"]): [r for f in t["files"] for r in tables.read_csv(f)]
    for t in snakemake.params.tasks
}
models = snakemake.params.models
rows = table.best_layer_rows(tasks, models)
tables.write_csv(rows, snakemake.output.csv, columns=table.COLUMNS)
tables.write_text(table.markdown(rows, list(tasks), models), snakemake.output.md)
tables.write_text(table.latex(rows, list(tasks), models), snakemake.output.tex)
