"""Dynamic batching: concurrent requests for one model become one onnxruntime call.

Requests wait in a bounded queue. A single worker takes the first, then keeps
taking whatever is queued — waiting at most ``max_delay`` for more — until the
batch holds ``max_batch`` rows; it runs the batch on its own thread (the event
loop stays free to accept requests) and hands each caller its slice. While one
batch runs, the next one fills up, so batches grow with the load by themselves.

Everything per request is kept to plain Python objects (a deque, one future):
at 64 clients the event loop, not onnxruntime, is what limits one worker, and
``asyncio.Queue`` and a timer per request cost more than the rest of the batching.
Deadlines are enforced by one sweep every tenth of the timeout instead.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import chain

import numpy as np

from serving.engine import OnnxModel
from serving.errors import ApiError
from serving.metrics import Metrics


class _Pending:
    __slots__ = ("inputs", "future", "deadline")

    def __init__(self, inputs: np.ndarray, future: asyncio.Future, deadline: float):
        self.inputs = inputs
        self.future = future
        self.deadline = deadline


def _all_done(pending: list[_Pending]) -> bool:
    """Every caller already has its answer (or gave up): nothing left to compute for."""
    return all(p.future.done() for p in pending)


class Batcher:
    def __init__(
        self,
        model: OnnxModel,
        metrics: Metrics,
        max_batch: int = 64,
        max_delay: float = 0.001,
        max_queue: int = 256,
        timeout: float = 5.0,
        batching: bool = True,
        inline_rows: int = 0,
    ):
        self.model = model
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_queue = max_queue
        self.timeout = timeout
        self.batching = batching
        self.inline_rows = min(inline_rows, max_batch)
        self._waiting: deque[_Pending] = deque()
        self._batch: list[_Pending] = []  # taken by the worker: filling or running
        self._wakeup: asyncio.Future | None = None  # the worker's, while it waits for work
        self._hopefuls = 0  # lone requests taking one turn of the loop before running inline
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"ort-{model.name}")
        self._tasks: list[asyncio.Task] = []
        self._label = f"{model.name}/{model.version}"
        metrics.track_depth(self._label, lambda: self.depth)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._work()), loop.create_task(self._sweep())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def depth(self) -> int:
        return len(self._waiting)

    def check_room(self) -> None:
        """503 now if the queue is full: called before a request's body is parsed, so that
        overload is shed for the price of routing, not of decoding."""
        if len(self._waiting) >= self.max_queue:
            raise self._overloaded()

    def _overloaded(self) -> ApiError:
        self.metrics.observe_rejected(self._label)
        message = f"{self.model.name} is overloaded ({self.max_queue} requests queued); retry"
        return ApiError(503, message, {"Retry-After": "1"})

    def _idle(self) -> bool:
        return not self._batch and not self._waiting

    async def _alone(self) -> bool:
        """No other request for this model arrives within one turn of the event loop
        (a burst read at once is batched, not run inline one by one)."""
        self._hopefuls += 1
        try:
            await asyncio.sleep(0)
            return self._hopefuls == 1 and self._idle()
        finally:
            self._hopefuls -= 1

    def _run_inline(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        try:
            outputs = self.model.run(inputs)
        except Exception as error:
            raise ApiError(500, f"inference failed ({type(error).__name__})") from None
        self.metrics.observe_batch(self._label, len(inputs), time.perf_counter() - started)
        return outputs

    async def submit(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for ``inputs``; 503 at once when the queue is full, 504 past the deadline.

        A lone small request runs on the event-loop thread: handing it to the
        onnxruntime thread and back (a thread wake-up, the GIL, the loop's self-pipe)
        costs more CPU than one image's inference (README, "Why it is fast"). Requests
        that arrive meanwhile wait that long, then batch as usual.
        """
        if len(inputs) <= self.inline_rows and self._idle() and await self._alone():
            return self._run_inline(inputs)
        if len(self._waiting) >= self.max_queue:
            raise self._overloaded()
        loop = asyncio.get_running_loop()
        pending = _Pending(inputs, loop.create_future(), loop.time() + self.timeout)
        self._waiting.append(pending)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        return await pending.future

    async def _sweep(self) -> None:
        """Answer 504 to every request past its deadline, queued or in a running batch."""
        loop = asyncio.get_running_loop()
        interval = self.timeout / 10
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for p in chain(self._waiting, self._batch):
                if p.deadline <= now and not p.future.done():
                    p.future.set_exception(
                        ApiError(504, f"deadline of {self.timeout:g} s exceeded; retry later")
                    )

    async def _wait_for_work(self, until: float | None) -> bool:
        """Until a request is queued (True) or ``until`` passes (False)."""
        if self._waiting:
            return True
        loop = asyncio.get_running_loop()
        self._wakeup = loop.create_future()
        try:
            if until is None:
                await self._wakeup
            else:
                remaining = until - loop.time()
                if remaining <= 0:
                    return False
                await asyncio.wait_for(self._wakeup, remaining)
        except TimeoutError:
            return False
        finally:
            self._wakeup = None
        return bool(self._waiting)

    async def _collect(self) -> None:
        """Take queued requests into ``self._batch``, in order, up to ``max_batch`` rows."""
        while not await self._wait_for_work(None):
            pass
        loop = asyncio.get_running_loop()
        batch, waiting = self._batch, self._waiting
        batch.append(waiting.popleft())
        rows = len(batch[0].inputs)
        if not self.batching:
            return
        give_up = loop.time() + self.max_delay
        while rows < self.max_batch:
            if not waiting and (self.max_delay <= 0 or not await self._wait_for_work(give_up)):
                return
            if rows + len(waiting[0].inputs) > self.max_batch:
                return  # the first of the next batch: order is kept
            batch.append(waiting.popleft())
            rows += len(batch[-1].inputs)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._collect()
                await self._run_batch(loop, self._batch)
            finally:
                self._batch = []

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        now = loop.time()
        live = [p for p in batch if not p.future.done() and p.deadline > now]
        if not live:
            return
        inputs = live[0].inputs if len(live) == 1 else np.concatenate([p.inputs for p in live])
        started = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(
                self._executor,
                self.model.run,
                inputs,
                self.max_batch,
                functools.partial(_all_done, live),
            )
        except Exception as error:  # keep serving whatever one batch did
            for p in live:
                if not p.future.done():
                    p.future.set_exception(
                        ApiError(500, f"inference failed ({type(error).__name__})")
                    )
            return
        if outputs is None:  # every caller gave up before the last chunk
            return
        self.metrics.observe_batch(self._label, len(inputs), time.perf_counter() - started)
        start = 0
        for p in live:
            stop = start + len(p.inputs)
            if not p.future.done():
                p.future.set_result({k: v[start:stop] for k, v in outputs.items()})
            start = stop
