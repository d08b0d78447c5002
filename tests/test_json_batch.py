"""The JSON fast path reads exactly what the ordinary parse reads, or steps aside."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from serving import json_batch

SHAPE = (28, 28, 1)


def ordinary(body: bytes, key: str) -> tuple[np.ndarray, dict]:
    payload = orjson.loads(body)
    with np.errstate(over="ignore"):
        value = np.array(payload.pop(key), np.float64).astype(np.float32)
    return value, payload


def images(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return (rng.random((n, *SHAPE)) * (rng.random((n, *SHAPE)) < 0.3)).tolist()


REGULAR = [
    orjson.dumps({"images": images(1)}),
    orjson.dumps({"images": images(3, 1), "seed": 4, "sample": True}),
    json.dumps({"sample": False, "images": images(2, 2)}).encode(),  # ", " separators
    orjson.dumps({"images": (np.ones((1, *SHAPE), int)).tolist()}),  # integers
    orjson.dumps({"images": images(1)}).replace(b"[0.0]", b"[0e0]", 5).replace(b"[1", b"[-1", 3),
]


@pytest.mark.parametrize("body", REGULAR)
def test_regular_bodies_read_the_same_as_the_ordinary_parse(body):
    fast = json_batch.read(body, "images", SHAPE)
    assert fast is not None
    expected, options = ordinary(body, "images")
    np.testing.assert_array_equal(fast[0], expected)
    assert fast[1] == options


def test_latent_vectors_read_exactly():
    z = np.random.default_rng(3).standard_normal((5, 16))
    body = json.dumps({"z": z.tolist()}).encode()
    batch, rest = json_batch.read(body, "z", (16,))
    np.testing.assert_array_equal(batch, z.astype(np.float32))
    assert rest == {}


IRREGULAR = [
    json.dumps({"images": images(1)}, indent=2).encode(),  # whitespace between brackets
    b'{"images": [[[[0.5],[]]]]}',  # a missing number
    b'{"images": [[[[0.5,0.5]]]]}',  # a wrong inner size
    b'{"images": "[[[[0.5]]]]"}',  # a string
    b'{"x": "\\"images\\": [[[[1]]]]", "images": 0}',  # the key inside a string
    b'{"images": [[[[1]]]], "images": [[[[1]]]]}',  # twice
    orjson.dumps({"images": images(1)}).replace(b"[0.0]", b"[NaN]", 1),
    orjson.dumps({"images": images(1)}).replace(b"[0.0]", b"[true]", 1),
    orjson.dumps({"images": images(1)}).replace(b"[0.0]", b"[1.2.3]", 1),
    orjson.dumps({"images": images(1)}).replace(b"[0.0]", b"[--1]", 1),
    orjson.dumps({"images": images(1)}).replace(b"[0.0]", b"[1 2]", 1),
    orjson.dumps({"images": images(1)}).replace(b"[0.0]", b"[]0.0", 1),  # after a list
    orjson.dumps({"images": images(1)}).replace(b"[0.0]", b"0.0[]", 1),  # before a list
    json.dumps({"images": images(1)}).encode().replace(b"[0.0]", b"[] 0.0", 1),
    orjson.dumps({"images": images(1)}).replace(b"],[0.0]", b"],1[0.0]", 1),  # 1 and 0.0 apart
    orjson.dumps({"images": images(1)})[:-3],  # cut short
    orjson.dumps({"images": np.zeros((1, 28, 28)).tolist()}),  # another shape: ordinary path
    orjson.dumps([{"images": images(1)}]),  # not an object
    orjson.dumps({"meta": {"images": images(1)}, "images": 0}),
    b'{"\\u0069mages": 7, "o": ' + orjson.dumps({"images": images(1)}) + b"}",  # escaped key
]


@pytest.mark.parametrize("body", IRREGULAR)
def test_anything_irregular_steps_aside(body):
    assert json_batch.read(body, "images", SHAPE) is None


@pytest.mark.parametrize("body", [b'{"z": [[1,2],3[4,5]]}', b'{"z": [[1,2],[3,]4]}'])
def test_a_vector_number_out_of_its_list_steps_aside(body):
    assert json_batch.read(body, "z", (2,)) is None
    assert json_batch.read(b'{"z": [[1,2],[3,4]]}', "z", (2,)) is not None


def test_random_corruptions_never_read_differently():
    """Flip, delete or insert one byte of a valid body: the fast path returns the
    ordinary parse's answer or None, never something else."""
    body = orjson.dumps({"images": images(1, 5), "seed": 1})
    rng = np.random.default_rng(0)
    alphabet = b'[],.0123456789eE+- "x:'
    for _ in range(20000):
        at = int(rng.integers(len(body)))
        choice = int(rng.integers(3))
        char = bytes([alphabet[int(rng.integers(len(alphabet)))]])
        if choice == 0:
            mutated = body[:at] + char + body[at + 1 :]
        elif choice == 1:
            mutated = body[:at] + body[at + 1 :]
        else:
            mutated = body[:at] + char + body[at:]
        fast = json_batch.read(mutated, "images", SHAPE)
        if fast is None:
            continue
        expected, options = ordinary(mutated, "images")
        assert expected.shape == fast[0].shape, mutated
        np.testing.assert_array_equal(fast[0], expected)
        assert fast[1] == options
