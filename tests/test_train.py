"""A real, short training run end to end, the run folder, resuming, and the command lines."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import keras
import pytest

from keras_vae.config import ModelConfig, RunConfig, TrainConfig
from keras_vae.errors import run_cli
from keras_vae.runs import load_config, load_vae
from tests.conftest import REPO, TFDS_DIR, run_module


def _history(run_dir):
    with open(run_dir / "history.csv") as stream:
        return list(csv.DictReader(stream))


def test_training_writes_a_complete_run_folder(trained_run):
    for name in (
        "config.json",
        "model.keras",
        "history.csv",
        "metrics.json",
        "samples.png",
        "reconstructions.png",
        "latent_map.png",
        "manifold.png",
        "checkpoints/best.keras",
    ):
        assert (trained_run / name).is_file(), name
    assert any((trained_run / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (trained_run / "backup").exists(), "the backup is removed after a finished run"
    config = load_config(trained_run)
    assert config.model.latent_dim == 2 and config.train.epochs == 3


def test_training_lowers_the_negative_elbo_substantially(trained_run):
    history = _history(trained_run)
    assert [int(row["epoch"]) for row in history] == [0, 1, 2]
    metrics = json.loads((trained_run / "metrics.json").read_text())
    # An untrained model scores ~543 nats (784 log 2); 3 short epochs more than halve it.
    assert -metrics["test_elbo"] < 260
    assert float(history[-1]["val_loss"]) < float(history[0]["loss"]) - 100
    assert metrics["test_elbo"] == pytest.approx(
        -metrics["test_reconstruction"] - metrics["test_kl"], abs=1e-2
    )
    assert metrics["test_images"] == 10000 and metrics["seconds_per_epoch"] > 0


def test_evaluate_command_reproduces_the_recorded_test_elbo(trained_run):
    recorded = json.loads((trained_run / "metrics.json").read_text())["test_elbo"]
    result = run_module("keras_vae.evaluate", str(trained_run), "--k", "0")
    assert result.returncode == 0, result.stderr
    assert "test ELBO" in result.stdout
    again = json.loads((trained_run / "metrics.json").read_text())["test_elbo"]
    assert again == pytest.approx(recorded, abs=1e-3)


def test_saved_run_model_loads_and_matches_the_checkpoint_format(trained_run):
    vae = load_vae(trained_run / "model.keras")
    assert vae.latent_dim == 2
    assert vae.encoder.count_params() > 0


def _backup_files(run_dir) -> list[Path]:
    """The backup's weight files, oldest first."""
    return sorted((run_dir / "backup").glob("*.weights.h5"), key=lambda path: path.stat().st_mtime)


def _tear(path) -> None:
    """What a kill -9 during the end-of-epoch backup left: the file cut at 96 bytes."""
    with open(path, "r+b") as handle:
        handle.truncate(96)


def _resume_in_process(capsys, run_dir) -> tuple[int, str, str]:
    """``python -m keras_vae.train --resume run_dir``, without starting another interpreter."""
    from keras_vae.train import main

    capsys.readouterr()
    code = run_cli(main, ["--resume", str(run_dir)])
    out, err = capsys.readouterr()
    return code, out, err


class _StopAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.stop_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.stop_epoch:
            raise RuntimeError("simulated crash")


@pytest.fixture(scope="module")
def resumed_run(shared_data, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A small real run crashed after its second epoch, then resumed by the command line as
    a user runs it: no TF_CPP_MIN_LOG_LEVEL, and a progress line every 0.1 s."""
    from keras_vae.config import DataConfig
    from keras_vae.train import train

    out = tmp_path_factory.mktemp("crashy")
    config = RunConfig(
        data=DataConfig(
            data_dir=str(shared_data), tfds_dir=str(TFDS_DIR), train_size=512, validation_size=0
        ),
        model=ModelConfig(latent_dim=2, conv_filters=(8, 16), hidden_units=32),
        train=TrainConfig(epochs=3, output_dir=str(out), run_name="crashy"),
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, extra_callbacks=[_StopAfterEpoch(1)])
    run_dir = out / "crashy"
    assert (run_dir / "backup").is_dir() and not (run_dir / "model.keras").exists()
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "keras_vae.train", "--resume", str(run_dir),
         "--progress-seconds", "0.1"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env,
    )  # fmt: skip
    return run_dir, result


def test_an_interrupted_run_resumes_where_it_stopped(resumed_run):
    run_dir, result = resumed_run
    assert result.returncode == 0, result.stderr
    history = _history(run_dir)
    assert [int(row["epoch"]) for row in history] == [0, 1, 2]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epoch_seconds_total"] == pytest.approx(
        sum(float(row["epoch_seconds"]) for row in history), abs=0.1
    )
    assert (run_dir / "model.keras").is_file() and not (run_dir / "backup").exists()
    assert "nothing to resume" in run_module("keras_vae.train", "--resume", str(run_dir)).stderr


# What TensorFlow and TFDS print by themselves: C++ log lines (I0000 00:00:... file.cc:123]),
# absl and Python logging, tqdm bars.
LIBRARY_LINE = re.compile(
    r"^[IWE]\d{4} |^(INFO|WARNING|DEBUG):|absl::InitializeLog|cpu_feature_guard|"
    r"Dl Completed|Generating splits|Extraction completed"
)


def test_training_prints_progress_lines_and_not_the_libraries_own(resumed_run):
    """Issue 14: an epoch was silent for minutes while TensorFlow's INFO lines and TFDS's
    bars filled the log. Here TF_CPP_MIN_LOG_LEVEL is unset, as for a user."""
    _, result = resumed_run
    progress = re.findall(
        r"^epoch 3/3 step \d+/4: [\d,]+ images/s, loss \d+\.\d\d, ", result.stdout, re.M
    )
    assert progress, result.stdout
    noise = [
        line for line in (result.stdout + result.stderr).splitlines() if LIBRARY_LINE.search(line)
    ]
    assert not noise, noise


KILLED_EPOCHS = 5


@pytest.fixture(scope="module")
def killed_run(shared_data, tmp_path_factory):
    """The incidents: a real training, meanwhile asked to train its run folder a second
    time (a --resume, directly and through the launcher), then killed with SIGKILL once
    it has backed up two epochs. Returns the run folder, a pristine copy of it taken
    right after the kill, the killed PID and the refused commands."""
    out = tmp_path_factory.mktemp("killed")
    holder = subprocess.Popen(
        [sys.executable, "-m", "keras_vae.train",
         "--data-dir", str(shared_data), "--tfds-dir", str(TFDS_DIR),
         "--train-size", "512", "--validation-size", "0", "--latent-dim", "2",
         "--conv-filters", "8", "16", "--hidden-units", "32",
         "--epochs", str(KILLED_EPOCHS), "--output-dir", str(out), "--run-name", "killed"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    watchdog = threading.Timer(240, holder.kill)
    watchdog.start()
    run_dir = out / "killed"
    refused = {}
    try:
        lines = iter(holder.stdout)
        assert any(line.startswith("Epoch 1/") for line in lines), "the first run did not train"
        for command in (
            ["keras_vae.train", "--resume", str(run_dir)],
            ["keras_vae.launch", "--workers", "2", "--", "--resume", str(run_dir)],
        ):
            refused[command[0]] = run_module(*command, timeout=60)
        alive = holder.poll() is None
        # Epoch 3 begins once epoch 2 is backed up: then the kill, as in the incident.
        assert any(line.startswith("Epoch 3/") for line in lines), "the first run stopped"
        holder.kill()
    finally:
        holder.kill()
        holder.wait()
        watchdog.cancel()
    assert alive, "the first training was still running while the others were refused"
    copy = out / "pristine"
    shutil.copytree(run_dir, copy)
    return run_dir, copy, holder.pid, refused


def test_a_second_training_on_a_live_run_folder_is_refused(killed_run):
    from keras_vae.runs import hold_folder

    run_dir, _, pid, refused = killed_run
    for command, result in refused.items():
        assert result.returncode == 2, (command, result.stderr[-2000:])
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, command
        assert f"run folder {run_dir} is in use" in result.stderr, result.stderr
        assert f"(pid {pid})" in result.stderr, result.stderr
    # The killed training left its lock file behind, but not its lock.
    assert (run_dir / "train.lock").is_file()
    with hold_folder(run_dir):
        pass


def test_a_torn_backup_resumes_from_the_one_before(killed_run, capsys):
    run_dir, _, _, _ = killed_run
    _tear(_backup_files(run_dir)[-1])
    rows_before = len(_history(run_dir))

    code, _, err = _resume_in_process(capsys, run_dir)  # the killed run's lock file is there
    assert code == 0, err
    assert "is damaged; resuming from" in err and "Traceback" not in err
    history = _history(run_dir)
    # The epoch of the torn backup is trained again, and its first row is replaced.
    assert [int(row["epoch"]) for row in history] == list(range(KILLED_EPOCHS)), rows_before
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epoch_seconds_total"] == pytest.approx(
        sum(float(row["epoch_seconds"]) for row in history), abs=0.1
    )
    # Weights and optimizer state came from the backup before: 4 steps for each epoch
    # of the run (a fresh start on a later epoch would have counted fewer).
    vae = load_vae(run_dir / "model.keras")
    assert int(vae.optimizer.iterations.numpy()) == 4 * KILLED_EPOCHS
    assert not (run_dir / "backup").exists()


def test_a_resume_without_a_loadable_backup_says_what_to_do(killed_run, capsys):
    _, run_dir, _, _ = killed_run
    rows = _history(run_dir)
    for path in _backup_files(run_dir):
        _tear(path)

    code, _, err = _resume_in_process(capsys, run_dir)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert f"no backup in {run_dir / 'backup'} can be loaded" in err and "delete" in err
    assert _history(run_dir) == rows, "nothing is trained or recorded"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "cifar10"], "invalid choice: 'cifar10'"),
        (["--latent-dim", "0"], "error: latent_dim must be a positive integer, got 0"),
        (["--epochs", "0"], "error: epochs must be >= 1, got 0"),
        (["--resume", "/nonexistent/run"], "error: run folder /nonexistent/run does not exist"),
    ],
)
def test_bad_arguments_give_one_clear_error(args, message):
    result = run_module("keras_vae.train", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_dir_is_a_clear_error_and_leaves_no_run_folder(tmp_path):
    result = run_module(
        "keras_vae.train",
        "--data-dir", str(tmp_path / "no-such-dir"),
        "--tfds-dir", str(tmp_path / "tfds"),
        "--output-dir", str(tmp_path / "runs"),
    )  # fmt: skip
    assert result.returncode == 2
    assert f"data dir {tmp_path / 'no-such-dir'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_evaluate_explains_missing_and_corrupt_runs(tmp_path):
    result = run_module("keras_vae.evaluate", str(tmp_path / "nope"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    (tmp_path / "config.json").write_text(json.dumps(RunConfig().to_dict()))
    (tmp_path / "model.keras").write_bytes(b"not a zip archive")
    result = run_module("keras_vae.evaluate", str(tmp_path))
    assert result.returncode == 2
    assert "cannot load" in result.stderr and "Traceback" not in result.stderr
    result = run_module("keras_vae.evaluate", "--runs", str(tmp_path / "empty"))
    assert result.returncode == 2 and "run `make train` first" in result.stderr


def test_latest_run_is_the_last_model_written_whatever_the_names(tmp_path):
    import os

    from keras_vae.runs import latest_run

    for name, stamp in (("zz-old-named-run", 1_000), ("2026-01-01-mnist-z16", 2_000)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.keras").write_bytes(b"")
        os.utime(tmp_path / name / "model.keras", (stamp, stamp))
    assert latest_run(tmp_path).name == "2026-01-01-mnist-z16"
