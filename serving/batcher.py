"""Dynamic batching: concurrent requests for one model become one onnxruntime call.

Requests wait in a bounded queue. A single worker takes the first, then keeps
taking whatever is queued — waiting at most ``max_delay`` for more — until the
batch holds ``max_batch`` rows; it runs the batch on its own thread (the event
loop stays free to accept requests) and hands each caller its slice. While one
batch runs, the next one fills up, so batches grow with the load by themselves.

A request of more than ``max_batch`` rows is served in slices, one such request
at a time: it fills half of each batch, and the small requests waiting meanwhile
(even those queued behind other large ones) fill the rest. A 1,024-image request
is sixteen batches of work; without this, a single-image request that arrived
behind it waited for all sixteen (README, "Reliability").

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
    """A queued request; ``taken`` rows of it are already in batches, ``parts`` answered."""

    __slots__ = ("inputs", "future", "deadline", "taken", "parts")

    def __init__(self, inputs: np.ndarray, future: asyncio.Future, deadline: float):
        self.inputs = inputs
        self.future = future
        self.deadline = deadline
        self.taken = 0
        self.parts: list[dict[str, np.ndarray]] = []

    def answer(self, outputs: dict[str, np.ndarray], start: int, stop: int) -> None:
        """Rows [start, stop) of ``outputs`` are this request's next slice."""
        part = {k: v[start:stop] for k, v in outputs.items()}
        if not self.parts and stop - start == len(self.inputs):
            self.future.set_result(part)
            return
        self.parts.append(part)
        if sum(len(next(iter(p.values()))) for p in self.parts) == len(self.inputs):
            self.future.set_result({k: np.concatenate([p[k] for p in self.parts]) for k in part})


_Slice = tuple[_Pending, int, int]  # a request and the rows [start, stop) of it in a batch


def _all_done(batch: list[_Slice]) -> bool:
    """Every caller already has its answer (or gave up): nothing left to compute for."""
    return all(p.future.done() for p, _, _ in batch)


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
        self._sliced: _Pending | None = None  # the large request being served in slices
        self._turn = False  # without batching: a slice and a small request take turns
        self._batch: list[_Slice] = []  # taken by the worker: filling or running
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
        if self.depth >= self.max_queue:
            raise self._overloaded()

    def _overloaded(self) -> ApiError:
        self.metrics.observe_rejected(self._label)
        message = f"{self.model.name} is overloaded ({self.max_queue} requests queued); retry"
        return ApiError(503, message, {"Retry-After": "1"})

    def _idle(self) -> bool:
        return not self._batch and not self._waiting and self._sliced is None

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
        if self.depth >= self.max_queue:
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
            sliced = [self._sliced] if self._sliced is not None else []
            for p in chain(self._waiting, (p for p, _, _ in self._batch), sliced):
                self._expire(p, now)

    def _expire(self, p: _Pending, now: float) -> bool:
        """Answer 504 if ``p`` is past its deadline; whether it is done, either way."""
        if p.deadline <= now and not p.future.done():
            p.future.set_exception(
                ApiError(504, f"deadline of {self.timeout:g} s exceeded; retry later")
            )
        return p.future.done()

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

    def _slice(self, room: int) -> int:
        """The next ``room`` rows (at most) of the large request being served."""
        p = self._sliced
        rows = min(len(p.inputs) - p.taken, room)
        self._batch.append((p, p.taken, p.taken + rows))
        p.taken += rows
        if p.taken == len(p.inputs):
            self._sliced = None
        return rows

    def _fill(self, room: int) -> int:
        """Whole requests from the queue, oldest first, while they fit in ``room`` rows.

        A large request starts being sliced when none is; while one is, the other large
        ones keep their place and the small ones behind them go first.
        """
        waiting, taken, i = self._waiting, 0, 0
        while i < len(waiting) and taken < room:
            p = waiting[i]
            if p.future.done():  # answered 504 while queued
                del waiting[i]
                continue
            size = len(p.inputs)
            if size > self.max_batch:
                if self._sliced is not None:
                    i += 1
                    continue
                del waiting[i]
                self._sliced = p
                taken += self._slice(room - taken)
            elif size <= room - taken:
                del waiting[i]
                self._batch.append((p, 0, size))
                taken += size
            else:
                break  # it leads the next batch: order is kept
            if not self.batching:
                break
        return taken

    async def _collect(self) -> None:
        """Fill ``self._batch`` with up to ``max_batch`` rows.

        A large request being sliced gets half of every batch (all of it when nothing
        else waits), so it progresses under any load of small ones.
        """
        sliced = self._sliced
        if sliced is not None and sliced.future.done():
            sliced = self._sliced = None
        if sliced is None:
            while not await self._wait_for_work(None):
                pass
        if not self.batching:
            self._turn = not self._turn
            if sliced is not None and (self._turn or not self._fill(self.max_batch)):
                self._slice(self.max_batch)
            elif sliced is None:
                self._fill(self.max_batch)
            return
        rows = self._slice(max(1, self.max_batch // 2)) if sliced is not None else 0
        rows += self._fill(self.max_batch - rows)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.max_delay
        while rows < self.max_batch and self._sliced is None:
            if self.max_delay <= 0 or not await self._wait_for_work(give_up):
                break
            taken = self._fill(self.max_batch - rows)
            if not taken:
                break
            rows += taken
        if self._sliced is not None and rows < self.max_batch:
            self._slice(self.max_batch - rows)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._collect()
                await self._run_batch(loop, self._batch)
            finally:
                self._batch = []

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Slice]) -> None:
        now = loop.time()
        live = [s for s in batch if not self._expire(s[0], now)]
        if not live:
            return
        parts = [p.inputs[start:stop] for p, start, stop in live]
        inputs = parts[0] if len(parts) == 1 else np.concatenate(parts)
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
            for p, _, _ in live:
                if not p.future.done():
                    p.future.set_exception(
                        ApiError(500, f"inference failed ({type(error).__name__})")
                    )
            return
        if outputs is None:  # every caller gave up before the last chunk
            return
        self.metrics.observe_batch(self._label, len(inputs), time.perf_counter() - started)
        offset = 0
        for p, start, stop in live:
            if not p.future.done():
                p.answer(outputs, offset, offset + stop - start)
            offset += stop - start
