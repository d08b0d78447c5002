"""Service settings, one dataclass; ``python -m serving`` makes a flag of every field.

Each field's help text lives beside it (:func:`vae_contract.settings.setting`), so the
flags, their defaults and their documentation cannot drift apart. Measured reasons for the
defaults are in the README ("Serve" and "Serving benchmark").
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from vae_contract import DECODER, ENCODER, FLOAT32, MAX_BATCH_SIZE, MAX_REQUEST_ITEMS, VARIANTS
from vae_contract.settings import setting

LOG_LEVELS = ("debug", "info", "warning")


@dataclass
class ServingConfig:
    repo: str = setting("artifacts/models", "model repository written by `make export`")
    variant: str = setting(
        FLOAT32,
        f"which build of the networks to serve as {ENCODER}/{DECODER}: "
        f'{" or ".join(VARIANTS)} (int8: written by `make export ARGS="--quantize int8"`)',
    )
    host: str = setting("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = setting(8080, "port to listen on (0: any free port)")
    poll_s: float = setting(
        10.0, "seconds between scans of the repository for new versions (0: never)"
    )
    workers: int = setting(
        1, "server processes; each loads its own sessions and batchers (see README)"
    )
    # Coalescing: one onnxruntime call takes up to max_batch_size rows; after the first
    # request arrives the batcher waits at most max_delay_ms for more. With 0 it waits
    # for nothing: requests that arrive while a batch runs form the next one.
    batching: bool = setting(True, "coalesce concurrent requests (--no-batching to turn off)")
    max_batch_size: int = setting(MAX_BATCH_SIZE, "rows per onnxruntime call")
    max_delay_ms: float = setting(0.0, "longest wait for a batch to fill")
    inline_rows: int = setting(
        8, "a lone batch of at most this many rows runs on the event loop (0: never)"
    )
    offload_min_bytes: int = setting(
        256 * 1024, "JSON bodies this large are decoded in a helper process (0: never)"
    )
    # Backpressure: requests waiting per model before 503, and each one's deadline.
    max_queue: int = setting(256, "requests waiting per model before 503")
    timeout_s: float = setting(5.0, "deadline of each request once received")
    # Limits on what one request may ask for, and on the connections.
    max_request_items: int = setting(MAX_REQUEST_ITEMS, "largest batch one request may send")
    max_body_bytes: int = setting(16 * 1024 * 1024, "largest request body")
    max_head_bytes: int = setting(16 * 1024, "largest request line plus headers (else 431)")
    max_connections: int = setting(1024, "open connections per worker before 503")
    max_concurrency: int = setting(512, "requests in progress per worker before 503")
    request_timeout_s: float = setting(30.0, "deadline to receive a whole request (else 408)")
    keep_alive_s: float = setting(5.0, "idle keep-alive connections are closed after this")
    max_unread_bytes: int = setting(
        256 * 1024 * 1024, "answers not yet read by their clients, in total, before 503"
    )
    write_timeout_s: float = setting(
        30.0, "a client that reads nothing of its answer for this long is disconnected"
    )
    graceful_timeout_s: float = setting(10.0, "on SIGTERM, how long requests may finish")
    # onnxruntime threads per session; 0 = all cores but one, which the event loop needs.
    intra_op_threads: int = setting(0, "onnxruntime threads per session (0 = cores - 1)")
    # TLS and proxies, passed through to uvicorn.
    ssl_certfile: str = setting("", "TLS certificate (PEM); serves HTTPS when set")
    ssl_keyfile: str = setting("", "TLS private key (PEM)")
    ssl_ca_certs: str = setting("", "CA bundle to verify client certificates")
    proxy_headers: bool = setting(
        False, "trust X-Forwarded-For/-Proto from --forwarded-allow-ips (behind a proxy)"
    )
    forwarded_allow_ips: str = setting("127.0.0.1", "proxies whose forwarded headers count")
    log_level: str = setting("info", "info logs one JSON line per request", choices=LOG_LEVELS)

    def __post_init__(self) -> None:
        checks = [
            (self.workers >= 1, f"workers must be >= 1, got {self.workers}"),
            (
                self.variant in VARIANTS,
                f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}",
            ),
            (self.poll_s >= 0, f"poll_s must be >= 0, got {self.poll_s}"),
            (self.max_batch_size >= 1, f"max_batch_size must be >= 1, got {self.max_batch_size}"),
            (self.max_delay_ms >= 0, f"max_delay_ms must be >= 0, got {self.max_delay_ms}"),
            (self.offload_min_bytes >= 0, "offload_min_bytes must be >= 0"),
            (self.inline_rows >= 0, f"inline_rows must be >= 0, got {self.inline_rows}"),
            (self.max_queue >= 1, f"max_queue must be >= 1, got {self.max_queue}"),
            (self.timeout_s > 0, f"timeout_s must be > 0, got {self.timeout_s}"),
            (self.max_request_items >= 1, "max_request_items must be >= 1"),
            (self.max_body_bytes >= 1024, "max_body_bytes must be >= 1024"),
            (self.max_head_bytes >= 1024, "max_head_bytes must be >= 1024"),
            (self.max_connections >= 1, "max_connections must be >= 1"),
            (self.max_concurrency >= 1, "max_concurrency must be >= 1"),
            (self.request_timeout_s > 0, "request_timeout_s must be > 0"),
            (self.keep_alive_s > 0, "keep_alive_s must be > 0"),
            (self.max_unread_bytes >= 1024 * 1024, "max_unread_bytes must be >= 1048576"),
            (self.write_timeout_s > 0, "write_timeout_s must be > 0"),
            (self.graceful_timeout_s >= 0, "graceful_timeout_s must be >= 0"),
            (0 <= self.port < 65536, f"port must be in 0..65535, got {self.port}"),
            (self.intra_op_threads >= 0, "intra_op_threads must be >= 0"),
            (
                self.log_level in LOG_LEVELS,
                f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}",
            ),
            (
                bool(self.ssl_certfile) == bool(self.ssl_keyfile),
                "ssl_certfile and ssl_keyfile go together; pass both or neither",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def threads(self) -> int:
        return self.intra_op_threads or max(1, (os.cpu_count() or 1) - 1)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServingConfig:
        return cls(**json.loads(text))
