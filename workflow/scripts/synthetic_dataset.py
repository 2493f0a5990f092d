"""Write the demo's synthetic ImageFolder dataset (images and masks), whole or not at all."""

from vitscope import logs
from vitscope.io import dumps, synthetic

logs.to_file(snakemake.log[0])
spec = synthetic.SyntheticSpec(**snakemake.params.spec)
with dumps.atomic_path(snakemake.output[0]) as folder:  # written beside the output, renamed when complete
    synthetic.write_imagefolder(folder, spec)
