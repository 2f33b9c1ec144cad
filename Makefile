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

# the seed's witness data set: 1.114e9 trials at theta_opt (about a minute with the digital twin)
run: $(STAMP)
	$(BIN)/labctl run sequences/dlcz_witness.yaml --config configs/lab.yaml --sim --seed 2018 \
	    --trials 1.114e9 --out runs/dlcz_witness-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_compile.py
	$(BIN)/python benchmarks/bench_twin.py
	$(BIN)/python benchmarks/bench_io.py
	$(BIN)/python benchmarks/bench_tags.py

clean:
	rm -rf $(VENV) runs build *.egg-info
