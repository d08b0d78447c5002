"""Prometheus metrics of the service, counted in plain Python, exposed by prometheus_client.

Every observation happens on the event-loop thread, so the counts are plain
integers and lists, with no lock: prometheus_client's own ``Counter`` and
``Histogram`` take a mutex per increment and walk every bucket, which cost more
per request than the rest of a ``/healthz`` answer (see README, "Why it is fast").
prometheus_client still does the exposition, through a custom collector, when
``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _Histogram:
    """Counts per bucket (the last one is +Inf) and the sum of what was observed."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, int]]:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append((floatToGoString(bound), running))
        return cumulative


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.latency: dict[str, _Histogram] = {}
        self.batch_size: dict[str, _Histogram] = {}
        self.inference: dict[str, _Histogram] = {}
        self.inference_cpu: dict[str, float] = defaultdict(float)
        self.rejected: dict[str, int] = defaultdict(int)
        self.depth: dict[str, Callable[[], int]] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests[route, str(status)] += 1
        if status >= 400:
            self.errors[route] += 1
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = _Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

    def observe_batch(self, model: str, rows: int, seconds: float, cpu_seconds: float) -> None:
        """One onnxruntime call: its rows, its duration, and the CPU time it took on the
        thread that made it."""
        if model not in self.batch_size:
            self.batch_size[model] = _Histogram(BATCH_BUCKETS)
            self.inference[model] = _Histogram(LATENCY_BUCKETS)
        self.batch_size[model].observe(rows)
        self.inference[model].observe(seconds)
        self.inference_cpu[model] += cpu_seconds

    def observe_rejected(self, model: str) -> None:
        self.rejected[model] += 1

    def track_depth(self, model: str, depth: Callable[[], int]) -> None:
        """``depth()`` is read at each scrape: nothing to update per request."""
        self.depth[model] = depth

    def collect(self) -> Iterator[Metric]:
        """The prometheus_client collector protocol: called at each scrape."""
        requests = CounterMetricFamily(
            "vae_requests", "HTTP requests by route and status.", labels=["route", "status"]
        )
        for labels, count in self.requests.items():
            requests.add_metric(list(labels), count)
        errors = CounterMetricFamily(
            "vae_request_errors", "Requests answered 4xx/5xx.", labels=["route"]
        )
        for route, count in self.errors.items():
            errors.add_metric([route], count)
        yield requests
        yield errors
        yield self._histograms(
            "vae_request_latency_seconds", "Request latency.", "route", self.latency
        )
        yield self._histograms(
            "vae_batch_size", "Rows per onnxruntime call.", "model", self.batch_size
        )
        yield self._histograms(
            "vae_inference_seconds", "Time of one onnxruntime call.", "model", self.inference
        )
        cpu = CounterMetricFamily(
            "vae_inference_cpu_seconds",
            "CPU time of onnxruntime calls on the thread that made them (with more than "
            "one intra-op thread, the work of the others is not counted).",
            labels=["model"],
        )
        for model, seconds in self.inference_cpu.items():
            cpu.add_metric([model], seconds)
        yield cpu
        depth = GaugeMetricFamily(
            "vae_queue_depth", "Requests waiting for a batch.", labels=["model"]
        )
        for model, read in self.depth.items():
            depth.add_metric([model], read())
        yield depth
        rejected = CounterMetricFamily(
            "vae_rejected",
            "Requests refused with 503 because the queue was full.",
            labels=["model"],
        )
        for model, count in self.rejected.items():
            rejected.add_metric([model], count)
        yield rejected

    @staticmethod
    def _histograms(name: str, doc: str, label: str, series: dict[str, _Histogram]) -> Metric:
        family = HistogramMetricFamily(name, doc, labels=[label])
        for value, histogram in series.items():
            family.add_metric([value], histogram.buckets(), histogram.total)
        return family

    def render(self) -> bytes:
        return generate_latest(self.registry)
