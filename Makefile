# `make test` / `make demo` work on a fresh machine: they create .venv when it is missing.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-slow lint demo bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# torch pinned: the CPU wheel is on local disk; an unpinned torch pulls GBs of CUDA.
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) lint
	$(VPY) -m pytest -q

test-slow: $(STAMP)
	$(VPY) -m pytest -q -m slow

demo: $(STAMP)
	$(VPY) -m qloom demo

bench: $(STAMP)
	$(VPY) bench/reference_speed.py

clean:
	rm -rf $(VENV) build .pytest_cache
