"""``python -m serving``: serve the exported ONNX models over HTTP, on uvicorn."""

from __future__ import annotations

import argparse
import sys

from serving.config import ServingConfig
from serving.errors import StartupError
from vae_contract.settings import add_flags


def build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`ServingConfig` field, its help and default taken from there.

    A flag not given is absent from the parsed namespace, and ``ServingConfig`` fills in
    its default.
    """
    parser = argparse.ArgumentParser(
        prog="python -m serving", description="Serve the VAE's ONNX encoder and decoder over HTTP."
    )
    add_flags(parser, ServingConfig)
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
