# Two entry points for a fresh machine (Python >= 3.10, a Rust toolchain, the package registries):
#   make demo   set up .venv, install vitfree, run the main job: the demo model at every exit on SYNTHETIC faces
#   make test   set up .venv, install vitfree with its dev extra, run cargo test and the whole pytest suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install setup demo test bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

install: $(PY)
	$(PY) -m pip install -e .

setup: $(PY)
	$(PY) -m pip install -e '.[dev]'

demo: install
	$(VENV)/bin/vitfree demo --out out/demo

test: setup
	cargo test --release
	$(PY) -m pytest

bench: setup
	VITFREE_BENCH_FULL=1 $(PY) -m pytest benches --benchmark-enable --benchmark-columns=min,mean,max,rounds

lint: setup
	cargo clippy --all-targets --all-features -- -D warnings
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/mypy python/vitfree

clean:
	rm -rf $(VENV) target out
