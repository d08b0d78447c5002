"""The service under hostile or excessive load: what a normal client still gets.

Three figures, each measured on the real service on loopback (``make bench`` runs
them after the throughput sections; ``--reliability-only`` runs only these):

- **stall**: the latency of a client sending single-image JSON encodes, alone, then
  beside two clients sending 1,024-image JSON requests, then beside two sending
  15 MB bodies of empty lists (refused 413), with large bodies decoded in the helper
  process and on the event loop (``--offload-min-bytes 0``). Goal: p50 < 100 ms.
- **overload**: 256 clients against ``--max-queue 8``: the share refused with 503,
  how long a refusal takes, and the goodput (answers 200 per second) against the
  service's capacity, measured at 8 clients on the same server.
- **unread answers**: 20 connections that pipeline 32 ``/v1/sample {"n": 1024}``
  each and read nothing: the server's memory growth over 12 s.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import orjson

from benchmarks.loadgen import LoadResult, http_request, run_load, run_mixed
from vae_contract import IMAGE_SHAPE, IMAGES, MAX_REQUEST_ITEMS

STALL_GOAL_MS = 100.0


def _latency(result: LoadResult) -> dict:
    ok = result.latencies_ms[result.statuses == 200] if result.statuses is not None else []
    return {
        "requests": result.requests,
        "errors": result.errors,
        "p50_ms": round(float(np.percentile(ok, 50)), 2) if len(ok) else None,
        "p99_ms": round(float(np.percentile(ok, 99)), 2) if len(ok) else None,
    }


def stall_requests() -> dict[str, bytes]:
    shape = (MAX_REQUEST_ITEMS, *IMAGE_SHAPE)  # the largest request the service takes
    images = (np.random.default_rng(0).random(shape) < 0.13).astype(np.float32)
    empties = f'{{"{IMAGES}": ['.encode() + b",".join([b"[]"] * 5_000_000) + b"]}"
    return {
        "normal": http_request("/v1/encode", orjson.dumps({IMAGES: images[:1].tolist()})),
        "json_1024_images": http_request("/v1/encode", orjson.dumps({IMAGES: images.tolist()})),
        "empty_lists_15mb": http_request("/v1/encode", empties),
    }


def stall(service_factory, seconds: float) -> dict:
    """A normal client's latency beside two costly ones, with and without the helper."""
    requests = stall_requests()
    report: dict = {"goal_p50_ms": STALL_GOAL_MS}
    for mode, flags in (("offload_on", ()), ("offload_off", ("--offload-min-bytes", "0"))):
        service = service_factory(*flags)
        try:
            rows = {"alone": _latency(run_load(service.port, requests["normal"], 1, seconds))}
            for costly in ("json_1024_images", "empty_lists_15mb"):
                groups = {"normal": (requests["normal"], 1), costly: (requests[costly], 2)}
                results = run_mixed(service.port, groups, seconds * 2)
                rows[f"beside_2x_{costly}"] = {
                    "normal": _latency(results["normal"]),
                    costly: _latency(results[costly]) | {"statuses": _counts(results[costly])},
                }
                p50 = rows[f"beside_2x_{costly}"]["normal"]["p50_ms"]
                rows[f"beside_2x_{costly}"]["goal_met"] = p50 is not None and p50 < STALL_GOAL_MS
        finally:
            service.close()
        report[mode] = rows
    return report


def _counts(result: LoadResult) -> dict[str, int]:
    values, counts = np.unique(result.statuses, return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts, strict=True)}


def overload(service_factory, seconds: float) -> dict:
    """Goodput and the cost of a refusal when far more clients come than the queue holds
    (``--max-queue 8``), against the same flood on the default queue."""
    image = (np.random.default_rng(1).random((1, *IMAGE_SHAPE)) < 0.13).astype(np.float32)
    request = http_request("/v1/encode", orjson.dumps({IMAGES: image.tolist()}))
    report = {}
    for label, flags in (("max_queue_8", ("--max-queue", "8")), ("default_queue", ())):
        service = service_factory(*flags)
        try:
            capacity = run_load(service.port, request, 8, seconds)
            flood = run_load(service.port, request, 256, seconds)
        finally:
            service.close()
        refused = flood.latencies_ms[flood.statuses == 503]
        goodput = float(np.sum(flood.statuses == 200)) / flood.seconds
        capacity_rps = float(np.sum(capacity.statuses == 200)) / capacity.seconds
        report[label] = {
            "capacity_8_clients_per_s": round(capacity_rps, 1),
            "clients": 256,
            "goodput_per_s": round(goodput, 1),
            "goodput_to_capacity": round(goodput / capacity_rps, 2) if capacity_rps else None,
            "refused_share": round(len(refused) / max(1, flood.requests), 3),
            "refusal_p50_ms": round(float(np.percentile(refused, 50)), 2) if len(refused) else None,
            "answered_p50_ms": _latency(flood)["p50_ms"],
            "statuses": _counts(flood),
        }
    return report


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (the decoding helper), in MB."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for process in [pid, *map(int, children)]:
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                total += int(line.split()[1])
    return total / 1024


def unread_answers(service_factory, seconds: float = 12.0) -> dict:
    """Memory held by clients that pipeline large answers and never read them."""
    service = service_factory()
    body = f'{{"n": {MAX_REQUEST_ITEMS}}}'.encode()
    request = http_request("/v1/sample", body) * 32
    sockets = []
    try:
        before = _rss_mb(service.process.pid)
        for _ in range(20):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", service.port))
            sock.sendall(request)
            sockets.append(sock)
        samples = []
        for _ in range(4):
            time.sleep(seconds / 4)
            samples.append(round(_rss_mb(service.process.pid) - before, 1))
    finally:
        for sock in sockets:
            sock.close()
        service.close()
    return {
        "connections": 20,
        "pipelined_each": 32,
        "rss_before_mb": round(before, 1),
        "rss_growth_mb_every_3s": samples,
    }
