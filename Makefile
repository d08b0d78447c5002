# Every target builds its own virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Where the official MNIST / Fashion-MNIST .gz files are; empty = TFDS downloads them.
DATA_DIR ?= $(KERAS_VAE_DATA_DIR)
ARGS   ?=

.PHONY: install train evaluate export serve bench bench-anomaly bench-peers test lint clean browser

install: $(STAMP)

# tensorflow-serving-api (TF Serving's protos, for export's warm-up records and the tests)
# is installed last and without its dependencies: its wheel requires the `tensorflow`
# wheel, a second TensorFlow beside tensorflow-cpu. Its release matches tensorflow-cpu's.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,export,serve,dev]"
	$(PY) -m pip install --quiet --no-deps "tensorflow-serving-api==2.21.*"
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

# AUROC of the scores, MNIST model vs Fashion-MNIST model (each its own repository; a
# missing one is refused with the train and export commands that make it).
MNIST_REPO   ?= artifacts/anomaly/mnist
FASHION_REPO ?= artifacts/anomaly/fashion_mnist

bench-anomaly: $(STAMP)
	$(PY) -m benchmarks.anomaly --mnist-repo $(MNIST_REPO) --fashion-mnist-repo $(FASHION_REPO) \
	  $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(ARGS)

# The peers of `make bench-peers` (PyTriton, LitServe, FastAPI) live in their own
# virtualenv, built from exact pins: none of them is a dependency of keras-vae.
VENV_PEERS  ?= .venv-peers
PEERS_STAMP := $(VENV_PEERS)/.installed

$(PEERS_STAMP): benchmarks/peers-requirements.txt
	$(PYTHON) -m venv $(VENV_PEERS)
	$(VENV_PEERS)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_PEERS)/bin/python -m pip install --quiet -r benchmarks/peers-requirements.txt
	touch $(PEERS_STAMP)

# Runs from the main .venv (keras-vae, the load generator); starts each peer server
# with $(VENV_PEERS)/bin/python.
bench-peers: $(STAMP) $(PEERS_STAMP)
	$(PY) -m benchmarks.peers --peers-python $(VENV_PEERS)/bin/python $(ARGS)

# Headless Chromium and its driver for the web explorer's test (tests/test_explorer.py),
# from Debian's packages when missing; without them that test skips and says why.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends chromium chromium-driver; }

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) $(VENV_PEERS) .pytest_cache .ruff_cache
