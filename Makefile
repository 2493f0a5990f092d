# vitscope: two commands for users (`make demo`, `make test`), a few for developers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned only here (torch and torchvision must match); pyproject keeps loose ranges.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
CORES ?= all
REPORT ?= results/report.zip
# The Slurm executor plugin lives apart from $(VENV): once installed, every snakemake
# start waits ~10 s for a Slurm controller. $(SLURM_VENV) sees $(VENV)'s packages (a .pth
# file) and adds only pyproject's `slurm` extra; only tests/test_slurm.py uses it.
SLURM_VENV ?= .venv-slurm

.PHONY: demo test test-slurm lint venv slurm-venv clean bench report

$(BIN)/snakemake: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH_PINS)
	$(BIN)/pip install -e '.[test]'
	touch $@

venv: $(BIN)/snakemake

$(SLURM_VENV)/installed: $(BIN)/snakemake pyproject.toml
	$(BIN)/python -m venv $(SLURM_VENV)
	$(BIN)/python -c 'import sysconfig; print("import site; site.addsitedir(%r)" % sysconfig.get_path("purelib"))' \
		> "$$($(SLURM_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/vitscope-base.pth"
	$(BIN)/pip freeze --exclude-editable > $(SLURM_VENV)/constraints.txt
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["slurm"], sep="\n")' \
		> $(SLURM_VENV)/requirements.txt
	$(SLURM_VENV)/bin/pip install -c $(SLURM_VENV)/constraints.txt -r $(SLURM_VENV)/requirements.txt
	touch $@

slurm-venv: $(SLURM_VENV)/installed

demo: venv
	$(BIN)/snakemake --cores $(CORES)

test: venv
	$(BIN)/python -m pytest

# Needs Debian's slurmctld, slurmd and slurm-client, and root (docs/development.md).
test-slurm: venv slurm-venv
	$(BIN)/python -m pytest -m slurm

# The Snakemake workflow catalog's checks: snakefmt (settings in pyproject.toml) and snakemake --lint.
lint: venv
	$(BIN)/ruff check src tests workflow benchmarks
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

bench: venv
	$(BIN)/python benchmarks/suite.py

# The HTML report of the demo's figures (runs what is missing first).
report: demo
	$(BIN)/snakemake --report $(REPORT)

clean:
	rm -rf results logs .snakemake
