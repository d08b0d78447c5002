"""Service settings, one dataclass; command-line flags override the defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class ServingConfig:
    repo: str = "artifacts/models"
    host: str = "127.0.0.1"
    port: int = 8080
    # Coalescing: one onnxruntime call takes up to max_batch_size rows; after the
    # first request arrives the batcher waits at most max_delay_ms for more. With
    # 0 it waits for nothing: requests that arrive while a batch runs form the next
    # one. `make bench` on 2 cores: a 1-2 ms wait doubled the single-client latency
    # and did not raise the throughput at 64 clients (see README).
    batching: bool = True
    max_batch_size: int = 64
    max_delay_ms: float = 0.0
    # Backpressure: requests waiting per model before 503, and each one's deadline.
    max_queue: int = 256
    timeout_s: float = 5.0
    # Limits on what one request may ask for.
    max_request_items: int = 1024
    max_body_bytes: int = 16 * 1024 * 1024
    # onnxruntime threads per session; 0 = all cores but one, which the HTTP event
    # loop needs (on 2 cores: 1, measured faster than 2 that fight the loop for a core).
    intra_op_threads: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.max_batch_size >= 1, f"max_batch_size must be >= 1, got {self.max_batch_size}"),
            (self.max_delay_ms >= 0, f"max_delay_ms must be >= 0, got {self.max_delay_ms}"),
            (self.max_queue >= 1, f"max_queue must be >= 1, got {self.max_queue}"),
            (self.timeout_s > 0, f"timeout_s must be > 0, got {self.timeout_s}"),
            (self.max_request_items >= 1, "max_request_items must be >= 1"),
            (self.max_body_bytes >= 1024, "max_body_bytes must be >= 1024"),
            (0 <= self.port < 65536, f"port must be in 0..65535, got {self.port}"),
            (self.intra_op_threads >= 0, "intra_op_threads must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def threads(self) -> int:
        return self.intra_op_threads or max(1, (os.cpu_count() or 1) - 1)
