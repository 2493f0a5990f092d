"""Write the demo's synthetic ImageFolder dataset (images and masks)."""

from vitscope import logs, synthetic

logs.to_file(snakemake.log[0])
spec = synthetic.SyntheticSpec(**snakemake.params.spec)
synthetic.write_imagefolder(snakemake.output[0], spec)
