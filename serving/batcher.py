"""Dynamic batching: concurrent requests for one model become one onnxruntime call.

Requests wait in a bounded queue. One thread per model takes the first, then
keeps taking whatever is queued — waiting at most ``max_delay`` for more — until
the batch holds ``max_batch`` rows, runs it, and hands the answers to the event
loop, which gives each caller its slice. While one batch runs, the next one fills
up, so batches grow with the load by themselves.

The thread takes its next batch itself, as soon as the last one is done, rather
than waiting for a turn of the event loop: under a flood the loop's turn is long
(hundreds of connections to serve, most of them refused with 503), and a queue
emptied only once per turn admits only ``max_queue`` requests per turn, and goodput
under overload collapses (README, "Reliability").

A request of more than ``max_batch`` rows is served in slices, one such request
at a time: it fills half of each batch, and the small requests waiting meanwhile
(even those queued behind other large ones) fill the rest. A 1,024-image request
is sixteen batches of work; without this, a single-image request that arrived
behind it waited for all sixteen (README, "Reliability").

A request's values are checked (:class:`~serving.codec.Values`) by the thread,
once its batch is assembled: one numpy call checks the whole batch (7 µs for 55
images, against 5 µs per image checked one by one), and only a batch that fails is
checked request by request, to answer the bad ones their 400 and leave them out.
A request served inline or in slices is checked when submitted, on the event loop,
as a handler would.

Everything per request is kept to plain Python objects (a deque, one future):
at 64 clients the event loop, not onnxruntime, is what limits one worker, and
``asyncio.Queue`` and a timer per request cost more than the rest of the batching.
Deadlines are enforced by one sweep every tenth of the timeout instead. Futures
are only ever completed on the event loop; the thread reads the queue (deque
operations are atomic) and whether a future is done.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import deque

import numpy as np

from serving.codec import Values
from serving.errors import ApiError
from serving.metrics import Metrics
from vae_contract import MAX_BATCH_SIZE
from vae_runtime import OnnxModel


class _Pending:
    """A queued request; ``taken`` rows of it are already in batches, ``parts`` answered."""

    __slots__ = ("inputs", "future", "deadline", "values", "taken", "parts", "answered")

    def __init__(
        self,
        inputs: np.ndarray,
        future: asyncio.Future,
        deadline: float,
        values: Values | None = None,
    ):
        self.inputs = inputs
        self.future = future
        self.deadline = deadline
        self.values = values  # still to check, by the thread
        self.taken = 0
        self.parts: list[dict[str, np.ndarray]] = []
        self.answered = 0  # rows of the parts

    def answer(self, part: dict[str, np.ndarray], rows: int) -> None:
        """``part`` (``rows`` rows of each output) is this request's next slice."""
        if not self.parts and rows == len(self.inputs):
            self.future.set_result(part)
            return
        self.parts.append(part)
        self.answered += rows
        if self.answered == len(self.inputs):
            self.future.set_result({k: np.concatenate([p[k] for p in self.parts]) for k in part})


_Slice = tuple[_Pending, int, int]  # a request and the rows [start, stop) of it in a batch
_Answer = tuple[_Pending, dict[str, np.ndarray], int]  # a request, its rows of the outputs


def _split(outputs: dict[str, np.ndarray], live: list[_Slice]) -> list[_Answer]:
    """Each request's rows of a batch's outputs (views, in the batch's order)."""
    answers, offset = [], 0
    for p, start, stop in live:
        rows = stop - start
        answers.append((p, {k: v[offset : offset + rows] for k, v in outputs.items()}, rows))
        offset += rows
    return answers


def _inputs(live: list[_Slice]) -> np.ndarray:
    """A batch's input rows, in one array."""
    parts = [p.inputs[start:stop] for p, start, stop in live]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _all_done(batch: list[_Slice]) -> bool:
    """Every caller already has its answer (or gave up): nothing left to compute for."""
    return all(p.future.done() for p, _, _ in batch)


class Batcher:
    def __init__(
        self,
        model: OnnxModel,
        metrics: Metrics,
        max_batch: int = MAX_BATCH_SIZE,
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
        self._batch: list[_Slice] = []  # taken by the thread: filling or running
        self._has_work = threading.Event()
        self._stopping = False
        self._hopefuls = 0  # lone requests taking one turn of the loop before running inline
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sweeper: asyncio.Task | None = None
        self._label = f"{model.name}/{model.version}"
        metrics.track_depth(self._label, lambda: self.depth)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._sweeper = self._loop.create_task(self._sweep())
        self._thread = threading.Thread(target=self._serve, name=f"ort-{self._label}", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stopping = True
        self._has_work.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)

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
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            outputs = self.model.run(inputs)
        except Exception as error:
            raise ApiError(500, f"inference failed ({type(error).__name__})") from None
        seconds, cpu = time.perf_counter() - started, time.thread_time() - cpu
        self.metrics.observe_batch(self._label, len(inputs), seconds, cpu)
        return outputs

    async def submit(
        self, inputs: np.ndarray, values: Values | None = None
    ) -> dict[str, np.ndarray]:
        """Outputs for ``inputs``; 503 at once when the queue is full, 504 past the deadline,
        400 if ``values`` finds a bad one.

        A lone small request runs on the event-loop thread: handing it to the
        onnxruntime thread and back (a thread wake-up, the GIL, the loop's self-pipe)
        costs more CPU than one image's inference (README, "Why it is fast"). Requests
        that arrive meanwhile wait that long, then batch as usual.
        """
        if len(inputs) <= self.inline_rows and self._idle() and await self._alone():
            if values is not None:
                values.check(inputs)
            return self._run_inline(inputs)
        if len(self._waiting) >= self.max_queue:
            raise self._overloaded()
        if values is not None and len(inputs) > self.max_batch:  # sliced: check it whole
            values.check(inputs)
            values = None
        future = self._loop.create_future()
        pending = _Pending(inputs, future, time.monotonic() + self.timeout, values)
        self._waiting.append(pending)
        if not self._has_work.is_set():  # set() takes a lock even when already set
            self._has_work.set()
        return await future

    # -- on the event loop -------------------------------------------------------------
    async def _sweep(self) -> None:
        """Answer 504 to every request past its deadline, queued or in a running batch."""
        interval = self.timeout / 10
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            sliced = self._sliced
            for p in [*self._waiting, *(p for p, _, _ in list(self._batch)), sliced]:
                if p is not None:
                    self._expire(p, now)

    def _expire(self, p: _Pending, now: float) -> None:
        if p.deadline <= now and not p.future.done():
            p.future.set_exception(
                ApiError(504, f"deadline of {self.timeout:g} s exceeded; retry later")
            )

    def _deliver(
        self,
        live: list[_Slice],
        answers: list[_Answer] | None,
        failure: str | None,
        timing: tuple[float, float],
        expired: list[_Pending],
        refused: list[tuple[_Pending, ApiError]],
    ) -> None:
        """A batch's answers, handed over by the thread: each caller gets its rows."""
        now = time.monotonic()
        for p in expired:
            self._expire(p, now)
        for p, error in refused:
            if not p.future.done():
                p.future.set_exception(error)
        if failure is not None:
            for p, _, _ in live:
                if not p.future.done():
                    p.future.set_exception(ApiError(500, f"inference failed ({failure})"))
            return
        if answers is None:  # every caller gave up before the last chunk
            return
        self.metrics.observe_batch(self._label, sum(rows for _, _, rows in answers), *timing)
        for p, part, rows in answers:
            if not p.future.done():
                p.answer(part, rows)

    # -- on the onnxruntime thread -----------------------------------------------------
    def _serve(self) -> None:
        while not self._stopping:
            self._has_work.clear()  # before looking: a request queued from now wakes us
            if not self._waiting and self._sliced is None:
                self._has_work.wait()
                continue
            try:
                self._collect()
                self._run_batch(self._batch)
            finally:
                self._batch = []

    def _wait_for_work(self, until: float) -> bool:
        """Until a request is queued (True) or ``until`` passes (False)."""
        self._has_work.clear()
        if self._waiting:
            return True
        remaining = until - time.monotonic()
        return remaining > 0 and self._has_work.wait(remaining) and bool(self._waiting)

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

    @staticmethod
    def _passing(
        live: list[_Slice], inputs: np.ndarray, refused: list[tuple[_Pending, ApiError]]
    ) -> list[_Slice]:
        """The slices whose values pass; the others go to ``refused`` with their 400.
        The whole batch is checked in one call when its requests are checked by one rule
        (a check is "every element passes", so a batch that passes holds no bad request;
        only the wording of a refusal differs between protocols); otherwise, or if that
        fails, request by request."""
        checks = [p.values for p, _, _ in live if p.values is not None]
        if not checks:
            return live
        if len({values.pixels for values in checks}) == 1:
            try:
                checks[0].check(inputs)
                return live
            except ApiError:
                pass
        passing = []
        for s in live:
            p = s[0]
            try:
                if p.values is not None:
                    p.values.check(p.inputs)
            except ApiError as error:
                refused.append((p, error))
                continue
            passing.append(s)
        return passing

    def _collect(self) -> None:
        """Fill ``self._batch`` with up to ``max_batch`` rows.

        A large request being sliced gets half of every batch (all of it when nothing
        else waits), so it progresses under any load of small ones.
        """
        sliced = self._sliced
        if sliced is not None and sliced.future.done():
            sliced = self._sliced = None
        if not self.batching:
            self._turn = not self._turn
            if sliced is not None and (self._turn or not self._fill(self.max_batch)):
                self._slice(self.max_batch)
            elif sliced is None:
                self._fill(self.max_batch)
            return
        rows = self._slice(max(1, self.max_batch // 2)) if sliced is not None else 0
        rows += self._fill(self.max_batch - rows)
        give_up = time.monotonic() + self.max_delay
        while rows < self.max_batch and self._sliced is None:
            if self.max_delay <= 0 or not self._wait_for_work(give_up):
                break
            taken = self._fill(self.max_batch - rows)
            if not taken:
                break
            rows += taken
        if self._sliced is not None and rows < self.max_batch:
            self._slice(self.max_batch - rows)

    def _run_batch(self, batch: list[_Slice]) -> None:
        now = time.monotonic()
        live = [s for s in batch if not s[0].future.done() and s[0].deadline > now]
        expired = [p for p, _, _ in batch if p.deadline <= now]
        refused: list[tuple[_Pending, ApiError]] = []  # bad values, answered 400
        answers, failure, timing = None, None, (0.0, 0.0)
        if live:
            inputs = _inputs(live)
            if len(passing := self._passing(live, inputs, refused)) < len(live):
                live = passing
                inputs = _inputs(live) if live else None
        if live:
            started, cpu, outputs = time.perf_counter(), time.thread_time(), None
            try:
                outputs = self.model.run(inputs, self.max_batch, functools.partial(_all_done, live))
            except Exception as error:  # keep serving whatever one batch did
                failure = type(error).__name__
            timing = (time.perf_counter() - started, time.thread_time() - cpu)
            if outputs is not None:  # sliced here, where it costs the event loop nothing
                answers = _split(outputs, live)
        if live or expired or refused:
            try:
                self._loop.call_soon_threadsafe(
                    self._deliver, live, answers, failure, timing, expired, refused
                )
            except RuntimeError:  # the loop has closed: the service is stopping
                self._stopping = True
