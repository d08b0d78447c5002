"""Shared fixtures: real MNIST from ../shared/data, prepared once per session by TFDS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("KERAS_VAE_DATA_DIR") or REPO.parent / "shared" / "data")
# Prepared TFDS data survives between local runs; a clean CI clone prepares it once.
TFDS_DIR = Path(os.environ.get("KERAS_VAE_TEST_TFDS_DIR") or REPO / ".cache" / "tfds")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(
            f"the official MNIST files are not in {SHARED_DATA}; set KERAS_VAE_DATA_DIR "
            "to the folder that holds mnist/ and fashion_mnist/"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def data_config(shared_data):
    """A small but real MNIST: 4096 training images, 1000 for validation, the full test set."""
    from keras_vae.config import DataConfig

    return DataConfig(
        data_dir=str(shared_data), tfds_dir=str(TFDS_DIR), train_size=4096, validation_size=1000
    )


@pytest.fixture(scope="session")
def splits(data_config):
    from keras_vae.data import load_splits

    return load_splits(data_config)


@pytest.fixture(scope="session")
def trained_run(data_config, tmp_path_factory) -> Path:
    """One short real training run (latent 2, 3 epochs on 4096 images), shared by the tests."""
    from keras_vae.config import ModelConfig, RunConfig, TrainConfig
    from keras_vae.train import train

    config = RunConfig(
        data=data_config,
        model=ModelConfig(latent_dim=2),
        train=TrainConfig(
            epochs=3, output_dir=str(tmp_path_factory.mktemp("runs")), run_name="small"
        ),
    )
    return train(config)


def run_module(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


@pytest.fixture(scope="session")
def local(exported_repo):
    """The exported models run in-process with onnxruntime: the reference for the service."""
    from serving.client import LocalVae

    return LocalVae(exported_repo)


@pytest.fixture(scope="session")
def exported_repo(trained_run, tmp_path_factory) -> Path:
    """The small trained run exported once as version 1 of a model repository."""
    from export.build import export_run

    repo = tmp_path_factory.mktemp("models")
    export_run(trained_run, repo, examples=200)
    return repo
