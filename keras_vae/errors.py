"""User-facing errors: one sentence that names the bad value and the fix.

Command-line entry points catch :class:`KerasVaeError` and print its message
instead of a traceback, so a typo never looks like a crash.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class KerasVaeError(Exception):
    """A problem the user can fix (bad argument, missing file, ...)."""


class ConfigError(KerasVaeError, ValueError):
    """An invalid configuration value."""


class DataError(KerasVaeError):
    """A dataset that is missing, corrupt or cannot be prepared."""


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run ``main`` and turn a :class:`KerasVaeError` into one line on stderr and exit code 2."""
    try:
        return main(argv) or 0
    except KerasVaeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
