# labctl: two commands do all the set-up on a fresh machine.
#   make run   - dry run of the DLCZ witness sequence on the simulated station
#   make test  - the whole hardware-free test suite
# a CPython 3.12/3.13 that runs (pyenv installs included), else python3 (3.10+)
PYTHON ?= $(shell for p in python3.13 python3.12 $$(ls -d $$HOME/.pyenv/versions/3.1[23]*/bin/python3 2>/dev/null) python3; do \
	  $$p -c 'import sys; assert sys.version_info >= (3, 10)' >/dev/null 2>&1 && { command -v $$p; break; }; done)
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

# the seed's witness data set: 1.114e9 trials at theta_opt (about a minute with the digital twin)
run: $(STAMP)
	$(BIN)/labctl run sequences/dlcz_witness.yaml --config configs/lab.yaml --sim --seed 2018 \
	    --trials 1.114e9 --out runs/dlcz_witness-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_tags.py

clean:
	rm -rf $(VENV) runs build *.egg-info
