"""Read one large numeric array out of a JSON body without building its nested lists.

A JSON image ``[N, 28, 28, 1]`` is ~800 nested lists: ``orjson.loads`` plus
``np.asarray`` spent ~150 µs of CPU on one image, several times what onnxruntime
spends encoding it. Here the array's text is located, its bracket skeleton is checked
against the one of a regular array of the shape it claims, and only its numbers are
parsed, as one flat JSON list. Anything unusual returns None, and the caller takes
the general path, which also words the error: this module never rejects a request.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

import numpy as np
import orjson

_NUMBER_AND_SPACE = b"0123456789.eE+- \t\r\n"
_BRACKETS_TO_SPACES = bytes.maketrans(b"[]", b"  ")


@lru_cache(maxsize=64)
def _key_pattern(key: str) -> re.Pattern[bytes]:
    return re.compile(b'"' + re.escape(key.encode()) + rb'"\s*:\s*\[')


@lru_cache(maxsize=256)
def _skeleton(shape: tuple[int, ...]) -> bytes:
    """The brackets and commas of a regular array of ``shape`` (numbers removed)."""
    text = b"[" + b"," * (shape[-1] - 1) + b"]"
    for size in reversed(shape[:-1]):
        text = b"[" + b",".join([text] * size) + b"]"
    return text


@lru_cache(maxsize=256)  # requests repeat their shapes
def _claimed_shape(skeleton: bytes) -> tuple[int, ...] | None:
    """The shape read along the first element of every level (checked afterwards)."""
    depth = len(skeleton) - len(skeleton.lstrip(b"["))
    if depth == 0:
        return None
    shape = []
    for level in range(depth):
        closing = depth - level  # brackets that close the first node of this level
        end = skeleton.find(b"]" * closing)
        if end < 0:
            return None
        node = skeleton[level : end + closing]
        inner = closing - 1  # a separator between this node's children
        separator = b"]" * inner + b"," + b"[" * inner
        shape.append(node.count(separator) + 1)
    return tuple(shape)


def split_array(body: bytes, key: str) -> tuple[dict[str, Any], np.ndarray] | None:
    """(the body's other fields, the float64 array at top-level ``key``), or None."""
    found = _key_pattern(key).search(body)
    if found is None:
        return None
    start = found.end() - 1
    # An array of numbers holds no quote and no brace: the next one is past its end
    # (anything else in between, such as letters, fails the skeleton check below).
    stops = [i for i in (body.find(b'"', start), body.find(b"}", start)) if i >= 0]
    end = body.rfind(b"]", start, min(stops, default=len(body))) + 1
    span = body[start:end]
    skeleton = span.translate(None, _NUMBER_AND_SPACE)
    shape = _claimed_shape(skeleton)
    if shape is None or min(shape) == 0 or skeleton != _skeleton(shape):
        return None
    try:
        values = orjson.loads(b"[" + span.translate(_BRACKETS_TO_SPACES) + b"]")
        rest = orjson.loads(body[:start] + b"0" + body[end:])
    except orjson.JSONDecodeError:
        return None
    # The span must have been the top-level value of `key` (not a nested one), and every
    # slot one number.
    if not isinstance(rest, dict) or type(rest.get(key)) is not int or rest[key] != 0:
        return None
    if len(values) != math.prod(shape):
        return None
    array = np.array(values, dtype=np.float64)
    if array.ndim != 1:
        return None
    return rest, array.reshape(shape)
