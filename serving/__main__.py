"""``python -m serving``: serve the exported ONNX models over HTTP."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields

from serving.config import ServingConfig
from serving.errors import RepositoryError

HELP = {
    "repo": "model repository written by `make export`",
    "batching": "coalesce concurrent requests (--no-batching to turn off)",
    "max_batch_size": "rows per onnxruntime call",
    "max_delay_ms": "longest wait for a batch to fill",
    "max_queue": "requests waiting per model before 503",
    "timeout_s": "deadline of each request",
    "max_request_items": "largest batch one request may send",
    "max_body_bytes": "largest request body",
    "intra_op_threads": "onnxruntime threads per session (0 = one per core)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving", description="Serve the VAE's ONNX encoder and decoder over HTTP."
    )
    for item in fields(ServingConfig):
        flag = "--" + item.name.replace("_", "-")
        default = item.default
        helptext = f"{HELP.get(item.name, item.name)} (default: {default})"
        if isinstance(default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=helptext
            )
        else:
            parser.add_argument(flag, type=type(default), default=default, help=helptext)
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning"],
        help="info logs one JSON line per request",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    log_level = args.pop("log_level")
    try:
        config = ServingConfig(**args)
        from serving.app import build_app
        from serving.service import Service

        service = Service(config)
    except (ValueError, RepositoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(message)s", stream=sys.stderr)
    print(
        f"serving {config.repo} on http://{config.host}:{config.port} "
        f"(batching {'on' if config.batching else 'off'}, max batch {config.max_batch_size}, "
        f"max delay {config.max_delay_ms} ms)",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        build_app(service),
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        proxy_headers=False,  # direct clients; a proxy in front would set its own headers
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
