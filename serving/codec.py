"""Request bodies in, arrays out (and back): JSON or ``.npy``, validated strictly.

Everything a caller can get wrong is caught here and becomes a 4xx naming the
problem, before any array reaches onnxruntime.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson

from serving.errors import ApiError

NPY = "application/x-npy"
JSON = "application/json"
PNG = "image/png"


def parse_json(body: bytes) -> Any:
    if not body:
        raise ApiError(400, "empty request body; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, f"malformed JSON: {error}") from None


def parse_npy(body: bytes) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except Exception as error:  # numpy raises several types for a bad header
        raise ApiError(400, f"body is not a valid .npy array ({error})") from None
    if not isinstance(array, np.ndarray):
        raise ApiError(400, "body holds several arrays; send one .npy array")
    return array


def to_array(value: Any, what: str) -> np.ndarray:
    """A numeric float32 array from nested JSON lists (or an .npy array)."""
    try:
        array = np.asarray(value)
    except ValueError:
        raise ApiError(400, f"{what} is ragged: every row must have the same shape") from None
    if array.dtype.kind not in "iuf":
        kind = "text" if array.dtype.kind in "US" else "non-numeric values"
        raise ApiError(400, f"{what} must be numbers, got {kind} (dtype {array.dtype})")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ApiError(400, f"{what} contains NaN or Inf; send finite numbers")
    return array


def check_batch(
    array: np.ndarray, item_shape: tuple[int, ...], what: str, max_items: int
) -> np.ndarray:
    """Accept [N, *item_shape] (images may also come as [N, 28, 28] or [N, 784])."""
    if array.ndim == 0 or array.shape[0] == 0:
        raise ApiError(400, f"{what} is an empty batch; send at least one item")
    items = array.shape[0]
    if items > max_items:
        raise ApiError(413, f"{what} has {items} items, above the limit of {max_items}; split it")
    size = int(np.prod(item_shape))
    if array.shape[1:] != item_shape:
        if array.ndim >= 2 and int(np.prod(array.shape[1:])) == size and len(item_shape) > 1:
            array = array.reshape((items, *item_shape))
        else:
            shape = "[N, " + ", ".join(map(str, item_shape)) + "]"
            raise ApiError(400, f"{what} has shape {list(array.shape)}; expected {shape}")
    return np.ascontiguousarray(array)


def check_pixels(images: np.ndarray) -> None:
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise ApiError(
            400, f"pixel values must be in [0, 1], got [{low:g}, {high:g}]; divide by 255"
        )


def dump_json(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def dump_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
