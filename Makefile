# labctl: two commands do all the set-up on a fresh machine.
#   make run   - dry run of the DLCZ witness sequence on the simulated station
#   make test  - the whole hardware-free test suite
PYTHON ?= python3
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
