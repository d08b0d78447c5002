"""The command-line tools a new user meets: defaults in --help, the launcher's --data-dir,
and benchmark reports that say which model they measured."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_module


@pytest.mark.parametrize(
    ("module", "shown"),
    [
        ("export", ["(default: artifacts/runs)", "(default: artifacts/models)", "(default: 1000)"]),
        ("keras_vae.launch", ["(default: 2)", "--data-dir", "$KERAS_VAE_DATA_DIR"]),
        ("benchmarks.serving", ["(default: artifacts/models)", "(default: artifacts/bench)"]),
        ("benchmarks.ab", ["(default: artifacts/models)", "(default: 10)", "encode_v2_binary"]),
        ("benchmarks.json_read", ["(default: 2000)", "(default: 5)"]),
    ],
)
def test_help_shows_each_default(module, shown):
    result = run_module(module, "--help", timeout=60)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines at any space
    for expected in shown:
        assert expected in text


def test_launch_passes_its_data_dir_to_the_training(tmp_path):
    """The folder reaches the training's config: preparing the data reads it (and fails,
    as it does not exist) before any worker starts."""
    missing = tmp_path / "no-such-data"
    result = run_module(
        "keras_vae.launch", "--workers", "1", "--data-dir", str(missing), "--",
        "--tfds-dir", str(tmp_path / "tfds"), "--epochs", "1",
    )  # fmt: skip
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"data dir {missing} does not exist" in result.stderr
    assert "started worker" not in result.stdout


def test_launch_refuses_a_data_dir_for_a_resume(tmp_path):
    result = run_module(
        "keras_vae.launch", "--data-dir", str(tmp_path), "--", "--resume", str(tmp_path)
    )
    assert result.returncode == 2
    assert "--data-dir does not apply to --resume" in result.stderr


def test_bench_report_names_the_model_it_measured(exported_repo):
    from benchmarks.serving import describe_model, measured_model

    model = measured_model(exported_repo)
    assert model == {
        "repository": str(exported_repo),
        "models": ["vae_encoder", "vae_decoder"],
        "version": 1,
        "source_run": "small",
        "latent_dim": 2,
        "dataset": "mnist",
        "architecture": "conv",
        "exported": model["exported"],
    }
    assert model["exported"]
    assert describe_model(model) == (
        "vae_encoder/vae_decoder v1 from run small (mnist, conv, latent 2)"
    )


def test_launch_prepares_the_data_without_the_libraries_chatter(data_config):
    """Issue 14: the launcher prepared the data before silencing TensorFlow, so its INFO
    lines opened every multi-worker log. TF_CPP_MIN_LOG_LEVEL unset, as for a user."""
    from tests.test_train import LIBRARY_LINE

    flags = ["--data-dir", data_config.data_dir, "--tfds-dir", data_config.tfds_dir]
    code = f"from keras_vae.launch import prepare_data; prepare_data({flags!r}); print('ok')"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
    noise = [line for line in result.stderr.splitlines() if LIBRARY_LINE.search(line)]
    assert not noise, noise
