"""How far training is and how long it took: a progress line every few seconds during an
epoch, for terminals and log files alike, and each epoch's time in ``history.csv``.

Keras prints one line per epoch when its output is not a terminal, and an epoch of a
large model takes minutes on two cores: the log would stay silent that long.
Its progress bar rewrites one line with carriage returns, which a log file keeps as
one endless line, and two workers' bars interleave; a plain line per interval does not.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import keras


class ProgressLine(keras.callbacks.Callback):
    """Prints ``epoch e/E step s/S: N images/s, loss L, T s elapsed, ~R s left``.

    At most one line per ``interval`` seconds, after a training step. The images/s
    and the time left are averaged over the epoch so far (the first epoch's include
    tracing); the loss is the epoch's running mean, as Keras reports it.
    """

    def __init__(
        self,
        interval: float,
        batch_size: int,
        steps_per_epoch: int,
        epochs: int,
        stream: TextIO | None = None,
    ):
        super().__init__()
        self.interval = interval
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.stream = stream
        self._epoch = 0
        self._started = self._last = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._started = self._last = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        done = batch + 1
        elapsed = now - self._started
        rate = done * self.batch_size / elapsed
        left = elapsed / done * (self.steps_per_epoch - done)
        loss = (logs or {}).get("loss")
        shown = f"{float(loss):.2f}" if loss is not None else "n/a"
        print(
            f"epoch {self._epoch + 1}/{self.epochs} step {done}/{self.steps_per_epoch}: "
            f"{rate:,.0f} images/s, loss {shown}, {elapsed:.0f} s elapsed, ~{left:.0f} s left",
            file=self.stream or sys.stdout,
            flush=True,
        )


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` to each epoch's logs, and so to ``history.csv``.

    It must come before ``CSVLogger`` in the callback list, which reads the same logs.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start
