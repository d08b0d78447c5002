"""Large JSON bodies are decoded in a helper process, off the event loop.

Decoding a large JSON request (1,024 images) is a long run of C calls (orjson,
bytes scans, numpy) that hold the GIL. On the event loop no other client is
answered meanwhile; in a thread it is the same, since the GIL is not
released inside those calls. In one separate process per worker, the loop only
hands over the body and receives the array (README, "Reliability", has the
figures). Small bodies, the common case, are decoded inline: a round trip to
the helper costs more than their whole decode.

The functions given to :meth:`Offload.call` must be module-level (they are sent
by reference) and their arguments picklable: a :class:`ModelView` stands in for
a model, whose onnxruntime session cannot leave the process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from serving.errors import ApiError

T = TypeVar("T")


@dataclass(frozen=True)
class ModelView:
    """What request decoding needs to know of a model."""

    name: str
    input_name: str
    item_shape: tuple[int, ...]
    output_names: tuple[str, ...]

    @classmethod
    def of(cls, model: Any) -> ModelView:
        return cls(model.name, model.input_name, model.item_shape, tuple(model.output_names))


def _ready() -> bool:
    return True


def _exit_with(parent: int) -> None:
    """In the helper: exit as soon as the server that started it is gone. A server killed
    with SIGKILL, or re-raising SIGTERM after its shutdown, runs no clean-up, and an
    orphaned helper would live on, holding the server's stderr open."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Offload:
    """One helper process; bodies of at least ``min_bytes`` are decoded there (0: never)."""

    def __init__(self, min_bytes: int):
        self.min_bytes = min_bytes
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the helper now, in the background: a fresh interpreter that imports the
        decoding modules (numpy among them), which the first large request should not wait for."""
        if self.min_bytes:
            self._pool = self._new_pool()
            self._pool.submit(_ready)

    @staticmethod
    def _new_pool() -> ProcessPoolExecutor:
        # spawn, not fork: the server process already runs threads (onnxruntime's).
        return ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with,
            initargs=(os.getpid(),),
        )

    async def call(self, decode: Callable[..., T], body: bytes, model: Any, *args: Any) -> T:
        """``decode(body, model, *args)``, in the helper when ``body`` is large."""
        if self._pool is None or len(body) < self.min_bytes:
            return decode(body, model, *args)
        loop = asyncio.get_running_loop()
        view = ModelView.of(model)
        try:
            return await loop.run_in_executor(self._pool, decode, body, view, *args)
        except BrokenProcessPool:  # the helper died (killed, out of memory): start another
            self._pool = self._new_pool()
            raise ApiError(
                503, "the request decoder restarted; retry", {"Retry-After": "1"}
            ) from None

    def stop(self) -> None:
        """Stop the helper and wait for it (it is idle, or finishing one decode)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
