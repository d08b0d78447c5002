"""A small closed-loop HTTP/1.1 load generator on asyncio protocols (uvloop if present).

It shares the 2 cores with the service under test, so it must cost as little CPU per
request as possible: requests are pre-encoded bytes, each virtual user keeps one
keep-alive connection, and a response is read by its Content-Length without building
any objects. Its own CPU per request is reported, so that what it took from the
machine is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"  # the cheapest request to a server


def http_request(path: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray
    client_cpu_s: float = 0.0
    statuses: np.ndarray | None = None  # the status of each measured response

    def summary(self, items_per_request: int = 1) -> dict:
        ok = self.requests - self.errors
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "requests_per_s": round(ok / self.seconds, 1),
            "items_per_s": round(ok * items_per_request / self.seconds, 1),
            "p50_ms": round(float(np.percentile(self.latencies_ms, 50)), 3),
            "p99_ms": round(float(np.percentile(self.latencies_ms, 99)), 3),
            "client_cpu_us_per_request": round(self.client_cpu_s / max(1, self.requests) * 1e6, 1),
        }


class _User(asyncio.Protocol):
    """One virtual user: send, wait for the whole response, record, send again."""

    def __init__(self, run: _Run):
        self.run = run
        self.buffer = bytearray()
        self.needed = -1  # bytes of the whole response, once its header is in
        self.began = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._send()

    def connection_lost(self, exc) -> None:
        self.transport = None
        self.run.user_done()

    def _send(self) -> None:
        self.began = time.perf_counter()
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.needed < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            header = bytes(self.buffer[: end + 2]).lower()
            start = header.find(b"content-length:")
            length = int(header[start + 15 : header.find(b"\r\n", start)]) if start >= 0 else 0
            self.needed = end + 4 + length
            self.status = int(self.buffer[9:12])
        if len(self.buffer) < self.needed:
            return
        del self.buffer[: self.needed]
        self.needed = -1
        now = time.perf_counter()
        self.run.record(self.status, now - self.began, now)
        if now < self.run.stop:
            self._send()
        else:
            self.transport.close()


class _Run:
    def __init__(self, request: bytes, concurrency: int, seconds: float, warmup: float):
        self.request = request
        self.concurrency = concurrency
        now = time.perf_counter()
        self.start_measure = now + warmup
        self.stop = self.start_measure + seconds
        self.latencies: list[float] = []
        self.statuses: list[int] = []
        self.requests = self.errors = 0
        self.done = asyncio.get_running_loop().create_future()
        self.open = concurrency

    def record(self, status: int, seconds: float, now: float) -> None:
        if now >= self.start_measure:
            self.latencies.append(seconds * 1000)
            self.statuses.append(status)
            self.requests += 1
            self.errors += status != 200

    def user_done(self) -> None:
        self.open -= 1
        if self.open == 0 and not self.done.done():
            self.done.set_result(None)


async def _run(
    host: str, port: int, request: bytes, concurrency: int, seconds: float, warmup: float
) -> LoadResult:
    loop = asyncio.get_running_loop()
    run = _Run(request, concurrency, seconds, warmup)
    cpu_before = time.process_time()
    for _ in range(concurrency):
        await loop.create_connection(lambda: _User(run), host, port)
    await run.done
    measured = run.stop - run.start_measure
    client_cpu = (time.process_time() - cpu_before) * seconds / (seconds + warmup)
    latencies, statuses = np.array(run.latencies), np.array(run.statuses)
    return LoadResult(
        concurrency, run.requests, run.errors, measured, latencies, client_cpu, statuses
    )


def _runner():
    runner = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    return runner


def run_load(
    port: int, request: bytes, concurrency: int, seconds: float = 3.0, warmup: float = 0.5
) -> LoadResult:
    """Closed loop: ``concurrency`` users each send the next request when one returns."""
    return _runner()(_run("127.0.0.1", port, request, concurrency, seconds, warmup))


def run_mixed(
    port: int, groups: dict[str, tuple[bytes, int]], seconds: float = 3.0, warmup: float = 0.5
) -> dict[str, LoadResult]:
    """Several closed loops at once on one server, e.g. a normal client beside two costly
    ones: ``groups`` maps a name to (request, concurrency); each gets its own result."""
    targets = [(port, request, concurrency) for request, concurrency in groups.values()]
    return dict(zip(groups, run_together(targets, seconds, warmup), strict=True))


def run_together(
    targets: list[tuple[int, bytes, int]], seconds: float = 3.0, warmup: float = 0.5
) -> list[LoadResult]:
    """Closed loops on several servers at once: ``targets`` are (port, request, concurrency).

    Servers measured at the same moment share every drift of the machine's speed."""

    async def together() -> list[LoadResult]:
        runs = [_run("127.0.0.1", port, req, c, seconds, warmup) for port, req, c in targets]
        return list(await asyncio.gather(*runs))

    return _runner()(together())


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of ``root`` and all its descendants, from /proc.

    Children that exited and were waited for are counted through their parent's
    cutime/cstime; those still running through their own utime/stime. Triton's stub,
    LitServe's workers and uvicorn all run in child processes.
    """
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process has gone since the listing
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")
