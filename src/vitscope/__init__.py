"""vitscope: how Vision Transformers trained under different supervision attend,
what they represent, and what each block is good for.

The package holds pure, typed functions; the Snakemake workflow in the
repository root wires them into rules.
"""

__version__ = "0.1.0"
