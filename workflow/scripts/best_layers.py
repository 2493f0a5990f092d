"""The best block per model and task ("No single winner") as CSV, Markdown, LaTeX and HTML (the report's)."""

from vitscope import logs
from vitscope.io import tables
from vitscope.tasks import best_layers

logs.to_file(snakemake.log[0])
tasks = {
    best_layers.Task(**{k: v for k, v in t.items() if k != "files"}): [
        r for f in t["files"] for r in tables.read_csv(f)
    ]
    for t in snakemake.params.tasks
}
models = snakemake.params.models
rows = best_layers.best_layer_rows(tasks, models)
tables.write_csv(rows, snakemake.output.csv, columns=best_layers.COLUMNS)
tables.write_text(best_layers.markdown(rows, list(tasks), models), snakemake.output.md)
tables.write_text(best_layers.latex(rows, list(tasks), models), snakemake.output.tex)
tables.write_text(best_layers.html_page(rows, list(tasks), models), snakemake.output.html)
