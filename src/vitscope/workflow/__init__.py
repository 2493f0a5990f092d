"""Helpers of the Snakemake workflow that need no torch (the Snakefile imports them at every start)."""
