# labctl: two commands do all the set-up on a fresh machine.
#   make run   - dry run of the DLCZ witness sequence on the simulated station
#   make test  - the whole hardware-free test suite
# the newest CPython 3.12/3.13 on the machine, else python3 (3.10+)
PYTHON ?= $(shell command -v python3.12 || command -v python3.13 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/labctl instruments --config configs/lab.yaml --sim

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_tags.py

clean:
	rm -rf $(VENV) runs build *.egg-info
