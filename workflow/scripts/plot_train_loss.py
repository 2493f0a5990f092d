"""Figure: the training loss of every trained model against step (a panel per model)."""

from vitscope import logs
from vitscope.io import tables
from vitscope.plots import common, training

logs.to_file(snakemake.log[0])
curves = {model: tables.read_csv(path) for model, path in zip(snakemake.params.models, snakemake.input.losses,
                                                               strict=True)}
fig = training.loss_curves(curves)
common.save(fig, [snakemake.output.pdf, snakemake.output.png], dpi=snakemake.params.dpi)
