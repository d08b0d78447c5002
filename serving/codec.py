"""Request bodies in, arrays out (and back): JSON or ``.npy``, validated strictly.

Everything a caller can get wrong is caught here and becomes a 4xx naming the
problem, before any array reaches onnxruntime.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from serving.errors import ApiError
from vae_contract import ENCODER, NPY_MEDIA_TYPE

NPY = NPY_MEDIA_TYPE
JSON = "application/json"
PNG = "image/png"


def parse_json(body: bytes) -> Any:
    if not body:
        raise ApiError(400, "empty request body; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, f"malformed JSON: {error}") from None


@lru_cache(maxsize=64)
def list_budget(item_shape: tuple[int, ...], max_items: int) -> int:
    """How many JSON lists a request of at most ``max_items`` nested items may hold:
    one per item per axis but the last (an image: 1 + 28 + 28 * 28), plus room for the
    batch and the other fields (an Open Inference Protocol ``parameters`` is free-form)."""
    per_item = sum(math.prod(item_shape[:axis]) for axis in range(len(item_shape)))
    return max_items * per_item + 256


def parse_json_object(body: bytes, max_lists: int | None = None) -> dict:
    """The body's JSON object. With ``max_lists``, a body holding more lists than a
    valid request could is refused by counting brackets, before orjson builds them:
    16 MB of ``[],`` is five million lists, over a second of parsing on the event loop."""
    if max_lists is not None and (lists := body.count(b"[")) > max_lists:
        raise ApiError(
            413,
            f"the body holds {lists} JSON lists, more than a batch within the limits can "
            f"({max_lists}); send fewer items, or a .npy body",
        )
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ApiError(400, "request body must be a JSON object")
    return payload


_MAGIC = b"\x93NUMPY"
_HEADER = re.compile(
    r"\{'descr': '([<|][a-z]\d)', 'fortran_order': False, 'shape': \(([\d, ]*)\), \}"
)


MAX_DIMS = 8
MAX_ABS_VALUE = 1e4  # of a latent vector: far outside the prior, still finite through the decoder
_ONE_BITS = int(np.float32(1.0).view(np.uint32))
_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], int]] = {}  # parsed .npy headers


def _npy_layout(descr: str, dims: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """dtype, shape and element count of a header, or a 400 if we would not read it."""
    try:
        dtype = np.dtype(descr)
    except TypeError:
        raise ApiError(400, f".npy dtype {descr!r} is not a numeric type; send float32") from None
    shape = tuple(int(n) for n in dims.replace(" ", "").split(",") if n)
    if len(shape) > MAX_DIMS or any(n > 2**31 for n in shape):
        raise ApiError(400, f".npy shape has {len(shape)} dimensions or a huge one; send [N, ...]")
    return dtype, shape, math.prod(shape)


def _fast_npy(body: bytes) -> np.ndarray | None:
    """Read the common case (version 1, C order, little-endian numbers) without ``np.load``.

    ``np.load`` parses the header with ``ast.literal_eval``, which costs more than the
    rest of a small binary request; a header seen before is not parsed again.
    Anything unusual falls back to :func:`_checked_npy`.
    """
    if len(body) < 10 or body[:6] != _MAGIC or body[6] != 1:
        return None
    end = 10 + int.from_bytes(body[8:10], "little")
    header = body[10:end]
    layout = _HEADERS.get(header)
    if layout is None:
        match = _HEADER.match(header.decode("latin1"))
        if match is None:
            return None
        layout = _npy_layout(match[1], match[2])
        if len(_HEADERS) >= 256:
            _HEADERS.clear()
        _HEADERS[header] = layout
    dtype, shape, count = layout
    if dtype.kind not in "iuf":
        return None
    if len(body) - end != count * dtype.itemsize:
        raise ApiError(
            400,
            f".npy body holds {len(body) - end} data bytes; its header needs "
            f"{count * dtype.itemsize}",
        )
    return np.ndarray(shape, dtype, body, end)  # a read-only view of the body's data


def _checked_npy(body: bytes) -> np.ndarray:
    """Any other ``.npy``: header read and checked against the body before ``np.load``."""
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(stream)
    except Exception as error:  # numpy raises several types for a bad header
        raise ApiError(400, f"body is not a valid .npy array ({str(error)[:200]})") from None
    if dtype.hasobject:
        raise ApiError(400, ".npy holds Python objects, which are never loaded; send float32")
    if len(shape) > MAX_DIMS or any(n > 2**31 for n in shape):
        raise ApiError(400, f".npy shape has {len(shape)} dimensions or a huge one; send [N, ...]")
    needed = math.prod(shape) * dtype.itemsize
    if len(body) - stream.tell() != needed:
        raise ApiError(
            400,
            f".npy body holds {len(body) - stream.tell()} data bytes; its header needs {needed}",
        )
    try:
        return np.load(io.BytesIO(body), allow_pickle=False)
    except Exception as error:
        raise ApiError(400, f"body is not a valid .npy array ({str(error)[:200]})") from None


def parse_npy(body: bytes) -> np.ndarray:
    fast = _fast_npy(body)
    return fast if fast is not None else _checked_npy(body)


_first = itemgetter(0)


def _regular_array(value: Any, what: str = "the array") -> np.ndarray | None:
    """Nested lists of equal lengths as one array, or None to let numpy decide (and explain).

    ``np.asarray`` on a JSON image (784 one-pixel lists) costs more than the parse
    itself: here each level's lengths are checked and the level flattened by C-level
    iterators, and numpy only ever sees one flat list.
    """
    if not isinstance(value, list):
        return None
    shape, probe = [], value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe or len(shape) > MAX_DIMS:
            break
        probe = probe[0]
    if len(shape) > MAX_DIMS:
        raise ApiError(400, f"{what} nests lists more than {MAX_DIMS} deep; send a batch [N, ...]")
    level = value
    for size in shape[1:]:
        try:
            if size == 1:  # one-element lists (a channel axis): take each one's item
                if sum(map(len, level)) != len(level):
                    return None
                level = list(map(_first, level))
                continue
            if set(map(len, level)) != {size}:
                return None
        except (TypeError, LookupError):  # a number or object where a list belongs: ragged
            return None
        level = list(chain.from_iterable(level))
    if bool in set(map(type, level)):  # numpy would take true for 1.0 beside numbers
        raise ApiError(400, f"{what} contains true or false; send numbers")
    try:
        array = np.array(level)
    except ValueError:  # lists below the leaves: ragged
        return None
    return array.reshape(shape) if array.ndim == 1 else None


def to_array(value: Any, what: str) -> np.ndarray:
    """A float32 array from nested JSON lists (or an .npy array), or a 400 saying why not."""
    array = value if isinstance(value, np.ndarray) else _regular_array(value, what)
    if array is None:
        try:
            array = np.asarray(value)
        except ValueError:
            raise ApiError(400, f"{what} is ragged: every row must have the same shape") from None
    if array.dtype == np.float32:  # already what the networks take (every .npy client)
        return array
    if array.dtype.kind not in "iuf":
        kind = "text" if array.dtype.kind in "US" else "non-numeric values"
        raise ApiError(400, f"{what} must be numbers, got {kind} (dtype {array.dtype})")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused by check_values
        return array.astype(np.float32, copy=False)


def check_values(array: np.ndarray, what: str, pixels: bool = False) -> None:
    """Finite numbers (``pixels``: in [0, 1] too), or a 400 naming the problem."""
    if array.size == 0:
        return
    if pixels and array.dtype == np.float32 and array.view(np.uint32).max() <= _ONE_BITS:
        return  # one pass: as unsigned integers, every float outside [+0, 1] (NaN too) is larger
    if pixels:  # min and max find NaN and Inf too: two passes instead of three
        low, high = float(array.min()), float(array.max())
        finite = math.isfinite(low) and math.isfinite(high)
    else:
        finite = bool(np.isfinite(array).all())
    if not finite:
        raise ApiError(400, f"{what} contains NaN or Inf; send finite numbers")
    if not pixels and (largest := float(np.abs(array).max())) > MAX_ABS_VALUE:
        raise ApiError(
            400,
            f"{what} holds {largest:g}; values beyond ±{MAX_ABS_VALUE:g} overflow the "
            "network's float32 arithmetic (the prior puts z within a few units of 0)",
        )
    if pixels and (low < 0.0 or high > 1.0):
        # The hint only where it is the likely mistake: bytes 0..255 sent as they are.
        hint = "; divide by 255" if low >= 0.0 and 2.0 <= high <= 255.0 else ""
        raise ApiError(400, f"pixel values must be in [0, 1], got [{low:g}, {high:g}]{hint}")


def item_forms(item_shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """The shapes accepted for one item: its own, then without a last axis of 1, and flat
    (an image as [28, 28, 1], [28, 28] or [784]); a vector has no other form."""
    if len(item_shape) < 2:
        return (item_shape,)
    flat = (math.prod(item_shape),)
    if item_shape[-1] == 1:
        return (item_shape, item_shape[:-1], flat)
    return (item_shape, flat)


def _batch(item_shape: tuple[int, ...]) -> str:
    return "[N, " + ", ".join(map(str, item_shape)) + "]"


def check_batch(
    array: np.ndarray, item_shape: tuple[int, ...], what: str, max_items: int
) -> np.ndarray:
    """Accept [N, *item_shape] (images may also come as [N, 28, 28] or [N, 784])."""
    if array.ndim == 0:
        raise ApiError(400, f"{what} is a single number; expected a batch {_batch(item_shape)}")
    if array.shape[0] == 0:
        raise ApiError(400, f"{what} is an empty batch; send at least one item")
    items = array.shape[0]
    if items > max_items:
        raise ApiError(413, f"{what} has {items} items, above the limit of {max_items}; split it")
    if array.shape[1:] != item_shape:
        if array.shape[1:] in item_forms(item_shape):
            array = array.reshape((items, *item_shape))
        else:
            expected = _batch(item_shape)
            raise ApiError(400, f"{what} has shape {list(array.shape)}; expected {expected}")
    return np.ascontiguousarray(array)


@dataclass(frozen=True, slots=True)
class Values:
    """How one request's values are checked (:func:`check_values`) once it is batched.

    A handler that sends its batch to a :class:`~serving.batcher.Batcher` hands this
    over with it rather than checking there: the batcher's thread checks a whole batch
    in one call, instead of once between every two requests on the event loop, where
    numpy's per-call machinery has left the CPU's caches (README, "Why it is fast").
    The answer to a bad value is the same 400.
    """

    what: str
    pixels: bool = False

    def check(self, array: np.ndarray) -> None:
        check_values(array, self.what, self.pixels)


def input_values(network: str, what: str) -> Values:
    """How ``network``'s input is checked, its refusals naming it ``what``: the encoder
    takes pixels in [0, 1], the decoder latent vectors."""
    return Values(what, pixels=network == ENCODER)


def read_batch(
    value: Any,
    item_shape: tuple[int, ...],
    what: str,
    max_items: int,
    pixels: bool = False,
    values: bool = True,
) -> np.ndarray:
    """A request's batch, checked in the order a caller fixes things: type, shape, values
    (``values=False``: the caller hands a :class:`Values` to the batcher instead)."""
    array = check_batch(to_array(value, what), item_shape, what, max_items)
    if values:
        check_values(array, what, pixels)
    return array


def dump_json(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def dump_npy(array: np.ndarray) -> bytes:
    """A version-1 ``.npy`` of a C-ordered array (the header padded to 64 bytes, as numpy does)."""
    array = np.ascontiguousarray(array)
    header = f"{{'descr': '{array.dtype.str}', 'fortran_order': False, 'shape': {array.shape}, }}"
    padding = 64 - (10 + len(header) + 1) % 64
    header = (header + " " * padding + "\n").encode("latin1")
    return _MAGIC + b"\x01\x00" + len(header).to_bytes(2, "little") + header + array.tobytes()
