"""A tiny HTTP/1.1 load generator on asyncio streams.

It shares the 2 cores with the service under test, so it must cost as little
CPU per request as possible: requests are pre-encoded bytes, each virtual user
keeps one keep-alive connection, and responses are read by Content-Length.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np


def http_request(path: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(reader, writer, request: bytes) -> int:
    writer.write(request)
    header = await reader.readuntil(b"\r\n\r\n")
    status = int(header[9:12])
    length = 0
    for line in header.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


@dataclass
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray

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
        }


async def _run(
    host: str, port: int, request: bytes, concurrency: int, seconds: float, warmup: float
):
    latencies: list[float] = []
    counts = {"requests": 0, "errors": 0}
    loop = asyncio.get_running_loop()
    start_measure = loop.time() + warmup
    stop = start_measure + seconds

    async def user() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while loop.time() < stop:
                began = time.perf_counter()
                status = await _exchange(reader, writer, request)
                if loop.time() >= start_measure:
                    latencies.append((time.perf_counter() - began) * 1000)
                    counts["requests"] += 1
                    counts["errors"] += status != 200
        finally:
            writer.close()

    await asyncio.gather(*(user() for _ in range(concurrency)))
    return LoadResult(
        concurrency, counts["requests"], counts["errors"], seconds, np.array(latencies)
    )


def run_load(
    port: int, request: bytes, concurrency: int, seconds: float = 3.0, warmup: float = 0.5
) -> LoadResult:
    """Closed loop: ``concurrency`` users each send the next request when one returns."""
    return asyncio.run(_run("127.0.0.1", port, request, concurrency, seconds, warmup))
