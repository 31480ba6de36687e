# ctmri-tf: the two commands are `make test` and `make demo`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DATA_DIR ?= $(CURDIR)/artifacts/tensorflow_datasets

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: test demo install clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel

$(STAMP): $(PY) setup.cfg pyproject.toml
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e '.[test,kfp]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m ctmri_tf.demo --data-dir $(DATA_DIR) --out artifacts/demo

clean:
	rm -rf $(VENV) artifacts .pytest_cache
