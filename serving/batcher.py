"""Dynamic batching: concurrent requests for one model become one onnxruntime call.

Requests wait in a bounded queue. A single worker takes the first, then keeps
taking whatever is queued — waiting at most ``max_delay`` for more — until the
batch holds ``max_batch`` rows; it runs the batch on its own thread (the event
loop stays free to accept requests) and hands each caller its slice. While one
batch runs, the next one fills up, so batches grow with the load by themselves.
"""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from serving.engine import OnnxModel
from serving.errors import ApiError
from serving.metrics import Metrics


@dataclass
class _Pending:
    inputs: np.ndarray
    future: asyncio.Future
    deadline: float
    enqueued: float = field(default_factory=time.perf_counter)


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
        self.timeout = timeout
        self.batching = batching
        self.inline_rows = inline_rows
        self._busy = False  # the worker holds requests: filling a batch or running it
        self._hopefuls = 0  # lone requests taking one turn of the loop before running inline
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"ort-{model.name}")
        self._carry: _Pending | None = None
        self._task: asyncio.Task | None = None
        self._label = f"{model.name}/{model.version}"
        metrics.track_depth(self._label, lambda: self.depth)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def depth(self) -> int:
        return self.queue.qsize() + (self._carry is not None)

    def check_room(self) -> None:
        """503 now if the queue is full: called before a request's body is parsed, so that
        overload is shed for the price of routing, not of decoding."""
        if self.queue.full():
            raise self._overloaded()

    def _overloaded(self) -> ApiError:
        self.metrics.observe_rejected(self._label)
        message = f"{self.model.name} is overloaded ({self.queue.maxsize} requests queued); retry"
        return ApiError(503, message, {"Retry-After": "1"})

    def _idle(self) -> bool:
        return not self._busy and self._carry is None and self.queue.empty()

    async def _lone(self, rows: int) -> bool:
        """Whether this request is alone: small, the model idle, and no other request for
        it arrives within one turn of the event loop (a burst read at once is batched)."""
        if rows > min(self.inline_rows, self.max_batch) or not self._idle():
            return False
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
        if await self._lone(len(inputs)):
            return self._run_inline(inputs)
        loop = asyncio.get_running_loop()
        pending = _Pending(inputs, loop.create_future(), loop.time() + self.timeout)
        try:
            self.queue.put_nowait(pending)
        except asyncio.QueueFull:
            raise self._overloaded() from None
        # A timer, not asyncio.wait_for: no extra task per request. A future that
        # expired (or whose caller was cancelled) is skipped by the worker.
        timer = loop.call_at(pending.deadline, self._expire, pending.future)
        try:
            return await pending.future
        finally:
            timer.cancel()

    def _expire(self, future: asyncio.Future) -> None:
        if not future.done():
            future.set_exception(
                ApiError(504, f"deadline of {self.timeout:g} s exceeded; retry later")
            )

    async def _next(self, wait: float | None) -> _Pending | None:
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if wait is None:
            return await self.queue.get()
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            if wait <= 0:
                return None
        try:
            return await asyncio.wait_for(self.queue.get(), wait)
        except TimeoutError:
            return None

    async def _collect(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch = [await self._next(None)]
        self._busy = True
        rows = len(batch[0].inputs)
        if not self.batching:
            return batch
        give_up = loop.time() + self.max_delay
        while rows < self.max_batch:
            item = await self._next(give_up - loop.time())
            if item is None:
                break
            if rows + len(item.inputs) > self.max_batch:
                self._carry = item  # first in the next batch: order is kept
                break
            batch.append(item)
            rows += len(item.inputs)
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._run_batch(loop, await self._collect())
            finally:
                self._busy = False

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
