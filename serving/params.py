"""Scalar request parameters (versions, seeds, flags, formats), checked strictly.

Each becomes a 400 naming the parameter and what it accepts: never a 500 from
``int()`` on odd digits (non-ASCII digits such as "²", or thousands of digits).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from serving.errors import ApiError

if TYPE_CHECKING:
    from serving.asgi import Request
    from serving.service import Service
    from vae_runtime import OnnxModel

MAX_DIGITS = 19  # every integer we accept fits in a signed 64-bit integer


def describe(value: Any) -> str:
    """The value for an error message, cut short: quoting a huge or deep object costs."""
    if isinstance(value, str):
        return repr(value[:40] + "...") if len(value) > 40 else repr(value)
    if isinstance(value, int) and value.bit_length() > 64:
        return "an integer of more than 19 digits"
    if value is None or isinstance(value, int | float):
        return repr(value)
    return f"a JSON {'list' if isinstance(value, list) else 'object'}"


def decimal(value: str) -> int | None:
    """An ASCII decimal integer of at most MAX_DIGITS digits, else None."""
    if value.isascii() and value.isdigit() and len(value) <= MAX_DIGITS:
        return int(value)
    return None


def version(raw: str | None) -> int | None:
    """A model version from a path or query (None: the latest)."""
    if raw is None:
        return None
    number = decimal(raw)
    if number is None:
        raise ApiError(400, f"version must be a positive integer, got {describe(raw)}")
    return number


def flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise ApiError(400, f"{what} must be true or false, got {describe(value)}")


def integral(value: Any) -> Any:
    """A float with no fractional part as the integer it is, anything else unchanged.

    JSON has one number type and JSON Schema counts ``5.0`` as an integer, so clients
    (and the OpenAPI document's checkers) may send ``"n": 5.0``; it means 5.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def seed(value: Any, what: str = "seed") -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        number = decimal(value)
        if number is not None:
            return number
    elif (
        isinstance(number := integral(value), int)
        and not isinstance(number, bool)
        and 0 <= number < 2**64
    ):
        return number
    raise ApiError(400, f"{what} must be a non-negative integer below 2**64, got {describe(value)}")


def positive_int(value: Any, what: str) -> int:
    number = integral(value)
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ApiError(400, f"{what} must be a positive integer, got {describe(value)}")
    return number


def bounded_int(value: Any, what: str, low: int, high: int, text: bool = False) -> int:
    """An integer option from ``low`` to ``high``; ``text``: decimal strings too (options
    of a .npy body come from the query string)."""
    if text and isinstance(value, str) and (number := decimal(value)) is not None:
        value = number
    number = integral(value)
    if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
        raise ApiError(
            400, f"{what} must be an integer from {low} to {high}, got {describe(value)}"
        )
    return number


def require(request: Request, method: str) -> None:
    """405 unless the request uses ``method``, with the Allow header of the path."""
    if request.method != method:
        allow = "GET, HEAD" if method == "GET" else method
        message = f"{request.method} is not allowed on {request.path}; use {method}"
        raise ApiError(405, message, {"allow": allow})


def model_path(
    service: Service, pattern: re.Pattern, prefix: str, request: Request
) -> tuple[OnnxModel, int | None, str | None]:
    """The model a ``{prefix}{name}[/versions/{v}]{tail}`` path names, its version as
    asked (None: the latest) and the tail; 404 for a path the pattern does not match."""
    match = pattern.match(request.path[len(prefix) :])
    if not match:
        raise ApiError(404, f"no such endpoint {request.path}; see /openapi.json")
    asked = version(match["version"])
    return service.model(match["name"], asked), asked, match["tail"]
