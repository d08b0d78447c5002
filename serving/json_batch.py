"""A JSON request's batch read straight from the text, when it is regular.

``orjson.loads`` turns one 28x28x1 image into 813 lists and 784 floats, and walking
them costs more than the parse; a JSON request spends most of its CPU there (README,
"Why it is fast"; ``python -m benchmarks.json_read`` compares both ways). Here the
array's text is found in the body, its brackets are checked against the skeleton of
a regular ``[N, *item_shape]`` array, and only the numbers go through orjson, as one
flat list. Anything else (pretty-printed JSON, other shapes, a malformed number, the
key twice) returns None, and the caller parses the body the ordinary way, which also
words the error.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

import numpy as np
import orjson

_OPEN = re.compile(rb"\s*:\s*(\[+)")
_WHITESPACE = b" \t\r\n"
_NUMBER_CHARS = b"0123456789.eE+-"
_COMMA, _OPENING, _CLOSING = b",[]"
_BRACKETS_AS_SPACES = bytes.maketrans(b"[]", b"  ")


@lru_cache(maxsize=16)
def _skeleton(item_shape: tuple[int, ...]) -> bytes:
    """Brackets and commas of one item once its numbers are deleted: (2, 1) -> b"[[],[]]"."""
    if not item_shape:
        return b""
    inner = _skeleton(item_shape[1:])
    return b"[" + b",".join([inner] * item_shape[0]) + b"]"


def _has_whitespace(text: bytes) -> bool:
    """Four single-byte searches (memchr) cost less than one deleting pass."""
    return b" " in text or b"\n" in text or b"\r" in text or b"\t" in text


def _numbers_only_in_innermost_lists(compact: bytes, innermost: int) -> bool:
    """Whether no number touches a bracket from outside a list, in a text without
    whitespace whose brackets and commas match the skeleton, and whose comma-separated
    stretches each hold one number (the flat parse counts them afterwards).

    With one number per innermost list (an image's channel axis), each stretch also
    holds exactly one innermost list, so a number out of place leaves its list empty:
    one substring search, which holds the GIL. Otherwise a number out of place sits
    right after a ``]`` or right before a ``[`` (after ``],`` the skeleton always
    continues with ``[``): one vectorised pass over the text."""
    if innermost == 1:
        return b"[]" not in compact
    text = np.frombuffer(compact, np.uint8)
    before, after = text[:-1], text[1:]
    if ((before == _CLOSING) & (after != _CLOSING) & (after != _COMMA)).any():
        return False
    return not ((after == _OPENING) & (before != _OPENING) & (before != _COMMA)).any()


def read(body: bytes, key: str, item_shape: tuple[int, ...]) -> tuple[np.ndarray, dict] | None:
    """``(batch [N, *item_shape] float32, the other fields)``, or None to parse normally."""
    needle = b'"' + key.encode() + b'"'
    at = body.find(needle) + len(needle)
    if at < len(needle) or b"\\" in body:  # an escape could spell the key otherwise
        return None
    opening = _OPEN.match(body, at)
    depth = 1 + len(item_shape)
    if opening is None or len(opening[1]) != depth:
        return None
    start = opening.start(1)
    # The last closing run: where the array ends when nothing after it nests as deep
    # (anything else between fails the skeleton below), found without a pass over it.
    end = body.rfind(b"]" * depth, start)
    if end < 0:
        return None
    end += depth
    span = body[start:end]
    compact = span.translate(None, _WHITESPACE) if _has_whitespace(span) else span
    one = _skeleton(item_shape)
    stripped = compact.translate(None, _NUMBER_CHARS)
    count, remainder = divmod(len(stripped) - 1, len(one) + 1)
    if remainder or count < 1 or stripped != b"[" + b",".join([one] * count) + b"]":
        return None
    if not _numbers_only_in_innermost_lists(compact, item_shape[-1]):
        return None
    # The key once: the text before it has no other, the array holds no quote, so only
    # the text after the array is searched (a nested {"images": ...} would else be read).
    if body.find(needle, end) >= 0:
        return None
    # Brackets become spaces, not nothing: "1[0.5]" must not read as 10.5. The outer
    # pair stays, and makes the flat list.
    flat = bytearray(span.translate(_BRACKETS_AS_SPACES))
    flat[0], flat[-1] = _OPENING, _CLOSING
    try:
        numbers = orjson.loads(flat)
        rest: Any = orjson.loads(body[:start] + b"0" + body[end:])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(rest, dict) or type(rest.get(key)) is not int:
        return None
    size = count * math.prod(item_shape)
    if len(numbers) != size:
        return None
    try:  # only numbers are left once the skeleton matched (a letter would not be deleted)
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused as such later
            batch = np.fromiter(numbers, np.float32, size)
    except (TypeError, ValueError, OverflowError):
        return None
    del rest[key]
    return batch.reshape((count, *item_shape)), rest
