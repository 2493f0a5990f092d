# vitscope: two commands for users (`make demo`, `make test`), a few for developers.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned only here (torch and torchvision must match); pyproject keeps loose ranges.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
CORES ?= all
REPORT ?= results/report.zip

.PHONY: demo test lint venv clean bench report

$(BIN)/snakemake: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH_PINS)
	$(BIN)/pip install -e '.[test]'
	touch $@

venv: $(BIN)/snakemake

demo: venv
	$(BIN)/snakemake --cores $(CORES)

test: venv
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check src tests workflow benchmarks
	$(BIN)/snakemake --lint

bench: venv
	$(BIN)/python benchmarks/suite.py

# The HTML report of the demo's figures (runs what is missing first).
report: demo
	$(BIN)/snakemake --report $(REPORT)

clean:
	rm -rf results logs .snakemake
