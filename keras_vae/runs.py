"""Run folders: where a training run writes, and how later steps find and read it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keras_vae.config import RunConfig
from keras_vae.errors import KerasVaeError
from vae_contract.atomic import write_text

CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
LOCK_FILE = "train.lock"
BACKUP_DIR = "backup"  # while training: keras_vae.backup's files, removed at the end


def new_run_dir(config: RunConfig) -> Path:
    """Create a fresh run folder; its name sorts by time, so the newest is the latest."""
    name = config.train.run_name or (
        f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{config.data.dataset}-z{config.model.latent_dim}"
    )
    run_dir = Path(config.train.output_dir) / name
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise KerasVaeError(
            f"run folder {run_dir} already exists; choose another --run-name "
            "or continue it with --resume"
        ) from None
    except OSError as error:
        raise KerasVaeError(f"cannot create run folder {run_dir} ({error.strerror})") from None
    return run_dir


@contextlib.contextmanager
def hold_folder(folder: str | Path, what: str = "run folder") -> Iterator[None]:
    """Hold the training lock of ``folder`` for the duration, or refuse in one line.

    Two trainings writing one folder mix their backups, history and time. The lock is a
    ``flock`` on ``train.lock``: the kernel releases it when its holder exits, however it
    dies, so a killed run never leaves a stale lock. The file stays and names the PID of
    its last holder, for the message of a refused second writer.
    """
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise KerasVaeError(f"cannot lock {what} {folder} ({error.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KerasVaeError(_in_use(folder, what, fd)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def refuse_if_training(folder: str | Path, what: str = "run folder") -> None:
    """Raise the one-line refusal if a live process holds ``folder``'s lock (a check only:
    the lock itself is taken by the training, with :func:`hold_folder`)."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return  # no lock file: no training ever held it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise KerasVaeError(_in_use(folder, what, fd)) from None
    finally:
        os.close(fd)


def _in_use(folder: str | Path, what: str, fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
    return (
        f"{what} {folder} is in use by another training (pid {pid}); "
        "wait for it to end, or stop it, before resuming"
    )


def latest_run(output_dir: str | Path = "artifacts/runs") -> Path:
    """The run folder whose model was written last (names given with --run-name do not sort
    by time, so the model file's modification time decides)."""
    root = Path(output_dir)
    models = list(root.glob(f"*/{MODEL_FILE}")) if root.is_dir() else []
    if not models:
        raise KerasVaeError(f"no trained run under {root}; run `make train` first")
    return max(models, key=lambda path: (path.stat().st_mtime, path.parent.name)).parent


def check_run_dir(run_dir: str | Path) -> Path:
    """Return ``run_dir`` as a Path if it holds a config and a model, else say what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KerasVaeError(
            f"run folder {run_dir} does not exist; pass a folder under artifacts/runs"
        )
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (run_dir / name).is_file():
            raise KerasVaeError(
                f"{run_dir} has no {name}; is training finished? (resume it with --resume)"
            )
    return run_dir


def load_vae(path: str | Path):
    """Load a saved VAE, with one clear error for a corrupt file or another kind of model."""
    import keras

    from keras_vae.model import VAE

    try:
        model = keras.saving.load_model(path, compile=True)
    except Exception as error:  # Keras raises many types for a bad archive
        raise KerasVaeError(
            f"cannot load {path} as a Keras model ({type(error).__name__}); "
            "is it a complete .keras file?"
        ) from None
    if not isinstance(model, VAE):
        raise KerasVaeError(f"{path} holds a {type(model).__name__}, not a keras_vae VAE")
    return model


def load_config(run_dir: str | Path) -> RunConfig:
    return RunConfig.load(Path(run_dir) / CONFIG_FILE)


def resolve_run(
    run_dir: str | None,
    runs: str | Path = "artifacts/runs",
    data_dir: str | None = None,
    tfds_dir: str | None = None,
) -> tuple[Path, RunConfig]:
    """The run a command works on (given, else the latest) and its config, with the data
    location overridden (:func:`override_data_location`)."""
    folder = check_run_dir(run_dir) if run_dir else latest_run(runs)
    return folder, override_data_location(load_config(folder), data_dir, tfds_dir)


def override_data_location(
    config: RunConfig, data_dir: str | None = None, tfds_dir: str | None = None
) -> RunConfig:
    """``config``, changed in place where a location is given: where a run's data lies
    depends on the machine a command runs on (the run may have been trained on another),
    not on the run."""
    if data_dir:
        config.data.data_dir = data_dir
    if tfds_dir:
        config.data.tfds_dir = tfds_dir
    return config


def write_json(path: str | Path, values: Any) -> None:
    """Write JSON atomically: readers see the old file or the new one, never half of one."""
    write_text(path, json.dumps(values, indent=2) + "\n")


def update_metrics(run_dir: str | Path, values: dict[str, Any]) -> dict[str, Any]:
    """Merge ``values`` into the run's ``metrics.json`` (sections key by key) and return it."""
    path = Path(run_dir) / METRICS_FILE
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(metrics.get(key), dict):
            metrics[key] = {**metrics[key], **value}
        else:
            metrics[key] = value
    write_json(path, metrics)
    return metrics
