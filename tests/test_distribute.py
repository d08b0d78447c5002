"""tf.distribute: the same train_step on 1 or 2 replicas, and 2 real worker processes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO, SHARED_DATA, TFDS_DIR, run_module

SMALL = [
    "--data-dir", str(SHARED_DATA), "--tfds-dir", str(TFDS_DIR),
    "--train-size", "1024", "--validation-size", "256", "--epochs", "2",
    "--latent-dim", "2", "--seed", "3",
]  # fmt: skip


def losses(run_dir) -> list[float]:
    with open(run_dir / "history.csv") as stream:
        return [float(row["loss"]) for row in csv.DictReader(stream)]


def test_the_loss_does_not_depend_on_the_replica_count():
    """One process, 2 logical CPUs: MirroredStrategy vs one device, with plain SGD (which,
    unlike Adam, would show a mis-scaled gradient as a different step)."""
    script = textwrap.dedent(
        """
        import json, os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        two = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, two)
        import keras, numpy as np
        from keras_vae.config import ModelConfig
        from keras_vae.model import VAE
        x = (np.random.default_rng(0).random((512, 28, 28, 1)) < 0.2).astype(np.float32)
        out = {}
        for name, strategy in [("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
                               ("two", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]:
            keras.utils.set_random_seed(0)
            with strategy.scope():
                vae = VAE.from_model_config(
                    ModelConfig(latent_dim=2, conv_filters=(8, 16), hidden_units=16), seed=0)
                vae.compile(optimizer=keras.optimizers.SGD(0.002))
            history = vae.fit(tf.data.Dataset.from_tensor_slices(x).batch(128), epochs=2, verbose=0)
            out[name] = {
                "replicas": strategy.num_replicas_in_sync,
                "loss": history.history["loss"],
                "eval": vae.evaluate(x, batch_size=128, verbose=0, return_dict=True)["loss"],
                "kernel": float(np.abs(vae.encoder.layers[1].kernel.numpy()).sum()),
            }
        print(json.dumps(out))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    one, two = out["one"], out["two"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    for a, b in zip(one["loss"], two["loss"], strict=True):
        assert abs(a - b) / a < 0.002, (one["loss"], two["loss"])
    assert abs(one["eval"] - two["eval"]) / one["eval"] < 0.002
    # The weights moved by the same step; a gradient summed over 2 replicas
    # without scaling would have moved them twice as far.
    assert abs(one["kernel"] - two["kernel"]) / one["kernel"] < 0.001


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    launched = run_module(
        "keras_vae.launch", "--workers", "2", "--",
        *SMALL, "--output-dir", str(out), "--run-name", "two",
        timeout=600,
    )  # fmt: skip
    single = run_module(
        "keras_vae.train", *SMALL, "--output-dir", str(out), "--run-name", "one", timeout=600
    )
    assert single.returncode == 0, single.stderr[-2000:]
    return out, launched


def test_two_workers_train_like_one_process(two_worker_run):
    out, launched = two_worker_run
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-2000:]
    assert "[worker 0]" in launched.stdout and "[worker 1]" in launched.stdout
    assert "all 2 workers finished" in launched.stdout
    two, one = losses(out / "two"), losses(out / "one")
    assert len(two) == len(one) == 2
    assert abs(two[0] - one[0]) / one[0] < 0.01, (two, one)  # same batches, same start
    assert abs(two[1] - one[1]) / one[1] < 0.05, (two, one)  # then only the noise differs
    config = json.loads((out / "two" / "config.json").read_text())
    assert config["train"]["strategy"] == "multi_worker"


def test_only_the_chief_writes_and_its_model_evaluates(two_worker_run):
    out, _ = two_worker_run
    run = out / "two"
    for name in ("model.keras", "metrics.json", "history.csv", "samples.png", "latent_map.png"):
        assert (run / name).is_file(), name
    assert not (out / ".workers").exists(), "the other workers' scratch folders are removed"
    result = run_module("keras_vae.evaluate", str(run), "--k", "0")
    assert result.returncode == 0, result.stderr
    recorded = json.loads((run / "metrics.json").read_text())["test_elbo"]
    assert -400 < recorded < -150


def test_a_dying_worker_stops_the_launch_and_the_run_resumes(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_vae.launch", "--workers", "2", "--",
         *SMALL, "--epochs", "3", "--output-dir", str(tmp_path), "--run-name", "dies"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    try:
        for line in process.stdout:
            if line.startswith("started worker 1 (pid "):
                pid = int(line.split("(pid ")[1].split(")")[0])
                break
        for line in process.stdout:
            if line.startswith("[worker 1] Epoch 2/"):  # epoch 1 is backed up
                os.kill(pid, signal.SIGKILL)
                break
        process.wait(120)
    finally:
        process.kill()
    assert process.returncode == 2
    stderr = process.stderr.read()
    assert "worker 1 failed (signal 9)" in stderr
    assert "Traceback" not in stderr
    run = tmp_path / "dies"
    assert not (run / "model.keras").exists() and (run / "backup").is_dir()

    resumed = run_module("keras_vae.launch", "--workers", "2", "--", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "[worker 1] Epoch 2/3" in resumed.stdout and "Epoch 1/3" not in resumed.stdout
    assert len(losses(run)) == 3 and (run / "model.keras").is_file()
    assert not (tmp_path / ".workers").exists()


def test_multi_worker_without_a_cluster_is_a_clear_error(tmp_path):
    env_free = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run(
        [sys.executable, "-m", "keras_vae.train", *SMALL, "--strategy", "multi_worker",
         "--output-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, env=env_free, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "needs TF_CONFIG" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
