"""The JSON fast path against the ordinary parse: ``python -m benchmarks.json_read``.

``serving.json_batch.read`` exists only because it is cheaper than ``orjson.loads``
followed by ``codec.read_batch`` on the nested lists; this measures both, in one run,
on the bodies clients send (orjson's compact output and ``json.dumps``' ", "
separators), for 1 and 16 images, and prints JSON: µs per body (best of the repeats)
and the ratio. If the ratio ever rises above 1, the fast path should go.
"""

from __future__ import annotations

import argparse
import json
import timeit

import numpy as np
import orjson

from serving import codec, json_batch
from vae_contract import IMAGE_SHAPE, IMAGES, MAX_REQUEST_ITEMS


def fast(body: bytes) -> np.ndarray:
    batch, _ = json_batch.read(body, IMAGES, IMAGE_SHAPE)
    return codec.read_batch(batch, IMAGE_SHAPE, IMAGES, MAX_REQUEST_ITEMS, pixels=True)


def ordinary(body: bytes) -> np.ndarray:
    payload = codec.parse_json_object(body)
    return codec.read_batch(payload[IMAGES], IMAGE_SHAPE, IMAGES, MAX_REQUEST_ITEMS, pixels=True)


def microseconds(read, body: bytes, number: int, repeats: int) -> float:
    return min(timeit.repeat(lambda: read(body), number=number, repeat=repeats)) / number * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--number", type=int, default=2000, help="reads per repeat (default: %(default)s)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="the best one counts (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    report = {}
    for count in (1, 16):
        images = rng.random((count, *IMAGE_SHAPE), dtype=np.float32)
        payload = {IMAGES: images.tolist()}
        for style, body in (
            ("orjson", orjson.dumps(payload)),
            ("json.dumps", json.dumps(payload).encode()),
        ):
            np.testing.assert_array_equal(fast(body), ordinary(body))
            number = max(1, args.number // count)
            fast_us = microseconds(fast, body, number, args.repeats)
            ordinary_us = microseconds(ordinary, body, number, args.repeats)
            report[f"{count}_images_{style}"] = {
                "body_bytes": len(body),
                "fast_path_us": round(fast_us, 1),
                "ordinary_parse_us": round(ordinary_us, 1),
                "fast_over_ordinary": round(fast_us / ordinary_us, 2),
            }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
