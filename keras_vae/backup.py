"""Epoch backups that a kill at any moment leaves loadable, and the resume that reads them.

Keras' ``BackupAndRestore`` rewrites ``latest.weights.h5`` in place, so a kill during the
end-of-epoch backup leaves a torn file and nothing else to resume from; with
``double_checkpoint=True`` it copies the previous file first (itself not atomic), and on
load falls back only on an ``OSError``, while a file torn elsewhere raises ``KeyError`` or
``ValueError``, and its epoch number lives in a second file written after the weights.

Here each backup is one file, ``epoch-<n>.weights.h5`` after n finished epochs: written
under a temporary name, flushed to disk, then renamed, so it exists whole or not at all,
and its epoch travels with it. The two newest are kept. A resume loads the newest that
loads, says which one it skipped, and refuses in one line if none does.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import keras

from keras_vae.errors import KerasVaeError
from vae_contract.atomic import replacing

_NAME = re.compile(r"epoch-(\d+)\.weights\.h5")
# What keras.callbacks.BackupAndRestore writes: a run it backed up resumes too.
_KERAS_WEIGHTS, _KERAS_METADATA = "latest.weights.h5", "training_metadata.json"


class EpochBackup(keras.callbacks.Callback):
    """Back up the weights and optimizer state at the end of every epoch.

    Put it after every callback that records the epoch (history, TensorBoard,
    checkpoints): the backup is the epoch's commit point, so a kill before it has the
    epoch trained again, and its records rewritten, on resume.
    """

    def __init__(self, folder: str | Path, keep: int = 2):
        super().__init__()
        self.folder = Path(folder)
        self.keep = keep

    def on_epoch_end(self, epoch, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        # Durable: the data reaches the disk before the name does.
        with replacing(self.folder / f"epoch-{epoch + 1:04d}.weights.h5", durable=True) as partial:
            self.model.save_weights(partial, overwrite=True)
        for _, old in backups(self.folder)[self.keep :]:
            old.unlink(missing_ok=True)
        for stale in self.folder.glob("partial-*.weights.h5"):  # left by a killed run
            stale.unlink(missing_ok=True)


def backups(folder: str | Path) -> list[tuple[int, Path]]:
    """The backups in ``folder`` as (finished epochs, file), newest first."""
    folder = Path(folder)
    found = [
        (int(match.group(1)), path)
        for path in folder.glob("epoch-*.weights.h5")
        if (match := _NAME.fullmatch(path.name))
    ]
    return sorted(found, reverse=True)


def restore(model: keras.Model, folder: str | Path) -> int:
    """Load the newest backup in ``folder`` that loads; return its finished epochs (0: none).

    Call it under the strategy's scope, after ``compile``: it builds the optimizer, whose
    state the backup holds.
    """
    folder = Path(folder)
    candidates = backups(folder) + _keras_backup(folder)
    if not candidates:
        return 0
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    damaged = []
    for epochs, path in candidates:
        try:
            model.load_weights(path)
        except Exception as error:  # h5py raises OSError, KeyError, ValueError, ...
            damaged.append(f"{path.name} ({type(error).__name__})")
            continue
        if damaged:
            print(
                f"warning: backup {', '.join(damaged)} in {folder} is damaged; "
                f"resuming from {path.name}, after epoch {epochs}",
                file=sys.stderr,
                flush=True,
            )
        return epochs
    raise KerasVaeError(
        f"no backup in {folder} can be loaded ({', '.join(damaged)} damaged); "
        f"delete {folder} to train this run again from its first epoch, or start a new run"
    )


def _keras_backup(folder: Path) -> list[tuple[int, Path]]:
    """The backup keras.callbacks.BackupAndRestore left, if any, after our own."""
    try:
        epochs = json.loads((folder / _KERAS_METADATA).read_text())["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    path = folder / _KERAS_WEIGHTS
    return [(int(epochs), path)] if path.is_file() else []
