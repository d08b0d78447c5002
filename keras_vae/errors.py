"""User-facing errors: one sentence that names the bad value and the fix.

Command-line entry points catch :class:`KerasVaeError` and print its message
instead of a traceback, so a typo never looks like a crash.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection


class KerasVaeError(Exception):
    """A problem the user can fix (bad argument, missing file, ...)."""


class ConfigError(KerasVaeError, ValueError):
    """An invalid configuration value."""


class DataError(KerasVaeError):
    """A dataset that is missing, corrupt or cannot be prepared."""


def require_choice(kind: str, value: object, choices: Collection[str]) -> None:
    """Refuse ``value`` unless it is one of ``choices``, naming them all.

    Every closed set of names (datasets, architectures, strategies, presets, ...) is
    checked here, so that a typo is always answered by the same sentence, with the
    valid names in the order given.
    """
    if value not in choices:
        raise ConfigError(f"unknown {kind} {value!r}; choose one of {', '.join(choices)}")


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
