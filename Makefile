# Every target builds its own virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Where the official MNIST / Fashion-MNIST .gz files are; empty = TFDS downloads them.
DATA_DIR ?= $(KERAS_VAE_DATA_DIR)
ARGS   ?=

.PHONY: install train evaluate export serve bench test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,export,serve,dev]"
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m keras_vae.train $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(ARGS)

evaluate: $(STAMP)
	$(PY) -m keras_vae.evaluate $(ARGS)

export: $(STAMP)
	$(PY) -m export $(ARGS)

serve: $(STAMP)
	$(PY) -m serving $(ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.serving $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
