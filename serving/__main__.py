"""``python -m serving``: serve the exported ONNX models over HTTP, on uvicorn."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from serving.config import LOG_LEVELS, ServingConfig
from serving.errors import StartupError


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`ServingConfig` field, its help and default taken from there."""
    parser = argparse.ArgumentParser(
        prog="python -m serving", description="Serve the VAE's ONNX encoder and decoder over HTTP."
    )
    for item in fields(ServingConfig):
        flag = "--" + item.name.replace("_", "-")
        default = item.default
        helptext = f"{item.metadata['help']} (default: {default!r})"
        if isinstance(default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=helptext
            )
        elif item.name == "log_level":
            parser.add_argument(flag, default=default, choices=LOG_LEVELS, help=helptext)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=helptext)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    try:
        config = ServingConfig(**args)
        from serving.server import run

        run(config)
    except (ValueError, StartupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
