"""Prometheus metrics of the service, in a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # the *_created series only add noise to a scrape

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "vae_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.errors = Counter(
            "vae_request_errors", "Requests answered 4xx/5xx.", ["route"], registry=r
        )
        self.latency = Histogram(
            "vae_request_latency_seconds",
            "Request latency.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "vae_batch_size",
            "Rows per onnxruntime call.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "vae_inference_seconds",
            "Time of one onnxruntime call.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "vae_queue_depth", "Requests waiting for a batch.", ["model"], registry=r
        )
        self.rejected = Counter(
            "vae_rejected",
            "Requests refused with 503 because the queue was full.",
            ["model"],
            registry=r,
        )

        # Labelled series, looked up once: labels() costs microseconds on every request.
        self._series: dict[tuple, tuple] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        key = ("request", route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self.requests.labels(route, str(status)),
                self.latency.labels(route),
                self.errors.labels(route) if status >= 400 else None,
            )
        count, latency, errors = series
        count.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def observe_batch(self, model: str, rows: int, seconds: float) -> None:
        key = ("batch", model)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self.batch_size.labels(model),
                self.inference.labels(model),
            )
        series[0].observe(rows)
        series[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
