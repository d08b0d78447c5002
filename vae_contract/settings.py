"""Configuration dataclasses that make their own command-line flags.

A field declared with :func:`setting` carries its help text (and its choices, for a
closed set of values) beside its default, and :func:`add_flags` makes one flag of every
field: a default, its type and its explanation are written once, in the dataclass, and
``--help`` cannot drift from them. Training (``keras_vae.config``) and the service
(``serving.config``) both declare their settings this way; it lives here because either
may import ``vae_contract`` (it needs no TensorFlow).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",  # noqa: A002 - the argparse word
    *,
    choices: Sequence[str] = (),
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field with the help text (and choices) its flag shows.

    ``factory`` computes the default when an instance is made, as ``default_factory``
    does; ``--help`` then shows no value (it would be the one of the moment), so ``help``
    says what an unset flag means, as it does for a ``None`` default.
    """
    if not help:
        raise TypeError("a setting needs its help text")
    metadata = {"help": help, "choices": tuple(choices)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def add_flags(parser: argparse._ActionsContainer, cls: type) -> None:
    """Add a ``--field-name`` flag to ``parser`` (or to a group) for every field of ``cls``.

    A flag given lands in the parsed namespace under the field's name; one not given is
    absent (``argparse.SUPPRESS``), so the dataclass's own default applies, and a caller
    may layer the flags given over other values (a preset, say) without mistaking a
    default for a choice. A ``bool`` becomes ``--name``/``--no-name``, a ``tuple`` as
    many values as its default has, and ``X | None`` takes an ``X``.
    """
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        flag = "--" + item.name.replace("_", "-")
        options: dict[str, Any] = {"default": argparse.SUPPRESS, "help": _help(item)}
        kind = _without_none(hints[item.name])
        if item.metadata.get("choices"):
            options["choices"] = item.metadata["choices"]
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is tuple:
            options["type"] = typing.get_args(kind)[0]
            options["nargs"] = len(item.default)
        else:
            options["type"] = kind
        parser.add_argument(flag, **options)


def _help(item: dataclasses.Field) -> str:
    """The field's help text, then its default as typed on the command line, if it has one.

    Escaped for argparse, which treats ``%`` in a help text as a format.
    """
    text = item.metadata["help"]
    default = item.default
    if isinstance(default, tuple):
        text += f" (default: {' '.join(map(str, default))})"
    elif default is not None and default is not dataclasses.MISSING:
        text += f" (default: {default!r})"
    return text.replace("%", "%%")


def _without_none(hint: Any) -> Any:
    """``X`` for ``X | None`` (a setting that may be left unset), else ``hint``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (kind,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return kind
    return hint
