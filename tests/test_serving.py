"""The real service on loopback: every endpoint, both TF Serving formats, bad input, overload."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.conftest import REPO
from tests.serving_helpers import pixels, running_service

NPY = "application/x-npy"


@pytest.fixture(scope="module")
def service(exported_repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "service.log"
    flags = ("--max-request-items", "256", "--max-body-bytes", "3000000", "--max-delay-ms", "5")
    with running_service(exported_repo, *flags, log=log) as url:
        yield url, log


@pytest.fixture(scope="module")
def url(service):
    return service[0]


@pytest.fixture(scope="module")
def images(splits):
    return pixels(splits, 6)


def post(url: str, path: str, **kwargs) -> httpx.Response:
    return httpx.post(url + path, timeout=30, **kwargs)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_operator_endpoints(url):
    assert httpx.get(url + "/healthz").json() == {"status": "alive"}
    ready = httpx.get(url + "/readyz").json()
    assert ready["status"] == "ready"
    assert ready["models"]["vae_decoder"]["versions"] == [1]
    assert ready["models"]["vae_encoder"]["latest"]["input"]["shape"] == [None, 28, 28, 1]
    spec = httpx.get(url + "/openapi.json").json()
    assert {
        "/v1/encode",
        "/v1/sample",
        "/v1/decode",
        "/v1/models/vae_encoder:predict",
        "/v1/models/vae_decoder/versions/{version}:predict",
        "/v2/models/vae_decoder/infer",
        "/v2/models/{name}/versions/{version}",
    } <= set(spec["paths"])
    metrics = httpx.get(url + "/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "vae_request_latency_seconds_bucket" in metrics.text


def test_encode_matches_onnxruntime_in_process(url, local, images):
    body = post(url, "/v1/encode", json={"images": images.tolist()}).json()
    expected = local.encode(images)
    assert body["model"] == "vae_encoder" and body["version"] == 1
    for name in ("z_mean", "z_log_var"):
        np.testing.assert_allclose(np.array(body[name]), expected[name], atol=1e-5)
    # The same images as [N, 28, 28] and [N, 784] are accepted.
    for shape in ((6, 28, 28), (6, 784)):
        other = post(url, "/v1/encode", json={"images": images.reshape(shape).tolist()}).json()
        np.testing.assert_allclose(other["z_mean"], body["z_mean"], atol=1e-6)


def test_encode_with_sampling_is_seedable(url, images):
    payload = {"images": images[:3].tolist(), "sample": True, "seed": 7}
    first = post(url, "/v1/encode", json=payload).json()
    again = post(url, "/v1/encode", json=payload).json()
    other = post(url, "/v1/encode", json={**payload, "seed": 8}).json()
    assert np.array(first["z"]).shape == (3, 2)
    assert first["z"] == again["z"] and first["z"] != other["z"]
    mean, std = np.array(first["z_mean"]), np.exp(0.5 * np.array(first["z_log_var"]))
    assert np.all(np.abs((np.array(first["z"]) - mean) / std) < 6)


def test_sample_and_decode(url, local):
    body = post(url, "/v1/sample", json={"n": 5, "seed": 3}).json()
    probs, z = np.array(body["images"]), np.array(body["z"])
    assert probs.shape == (5, 28, 28, 1) and z.shape == (5, 2)
    assert probs.min() >= 0.0 and probs.max() <= 1.0
    np.testing.assert_allclose(probs, local.decode(z), atol=1e-5)
    np.testing.assert_allclose(z, np.random.default_rng(3).standard_normal((5, 2)), atol=1e-6)
    again = post(url, "/v1/sample", json={"n": 5, "seed": 3}).json()
    assert again["images"] == body["images"]
    cold = post(url, "/v1/sample", json={"n": 5, "seed": 3, "temperature": 0.5}).json()
    np.testing.assert_allclose(np.array(cold["z"]), 0.5 * z, atol=1e-6)

    decoded = post(url, "/v1/decode", json={"z": z.tolist()}).json()
    np.testing.assert_allclose(np.array(decoded["images"]), probs, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs", [{"params": {"format": "png"}}, {"headers": {"accept": "image/png"}}]
)
def test_sample_as_png_grid(url, kwargs):
    response = post(url, "/v1/sample", json={"n": 10, "seed": 1}, **kwargs)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    data = response.content
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (width, height, depth, colour) == (4 * 30 + 2, 3 * 30 + 2, 8, 0)  # 4x3 grid


def test_binary_npy_path_and_http_client(url, local, images):
    response = post(
        url, "/v1/encode", content=npy(images), headers={"content-type": NPY, "accept": NPY}
    )
    assert response.headers["content-type"] == NPY
    assert response.headers["x-outputs"] == "z_mean,z_log_var"
    stacked = np.load(io.BytesIO(response.content))
    assert stacked.shape == (6, 2, 2) and stacked.dtype == np.float32
    np.testing.assert_allclose(stacked[:, 0], local.encode(images)["z_mean"], atol=1e-5)

    from serving.client import ServiceError, VaeClient

    with VaeClient(url) as client:
        encoded = client.encode(images, sample=True, seed=1)
        assert set(encoded) == {"z_mean", "z_log_var", "z"}
        np.testing.assert_allclose(
            encoded["z_log_var"], local.encode(images)["z_log_var"], atol=1e-5
        )
        decoded = client.decode(encoded["z"])
        np.testing.assert_allclose(decoded, local.decode(encoded["z"]), atol=1e-5)
        samples = client.sample(4, seed=5)
        np.testing.assert_allclose(samples, local.sample(4, seed=5), atol=1e-5)
        assert client.sample_png(4)[:4] == b"\x89PNG"
        with pytest.raises(ServiceError) as refused:
            client.decode(np.zeros((2, 3), np.float32))
        assert refused.value.status == 400


def test_tf_serving_row_and_columnar_formats(url, local, images):
    expected = local.encode(images[:2])
    rows = post(url, "/v1/models/vae_encoder:predict", json={"instances": images[:2].tolist()})
    predictions = rows.json()["predictions"]
    assert len(predictions) == 2 and set(predictions[0]) == {"z_mean", "z_log_var"}
    np.testing.assert_allclose(predictions[1]["z_mean"], expected["z_mean"][1], atol=1e-5)

    named = [{"images": image} for image in images[:2].tolist()]
    rows_named = post(url, "/v1/models/vae_encoder:predict", json={"instances": named}).json()
    assert rows_named == rows.json()

    columnar = post(
        url,
        "/v1/models/vae_encoder/versions/1:predict",
        json={"signature_name": "serving_default", "inputs": {"images": images[:2].tolist()}},
    ).json()
    np.testing.assert_allclose(columnar["outputs"]["z_log_var"], expected["z_log_var"], atol=1e-5)

    z = [[0.0, 0.0], [1.0, -1.0]]
    decoded = post(url, "/v1/models/vae_decoder:predict", json={"inputs": z}).json()["outputs"]
    assert set(decoded) == {"probs", "logits"}
    np.testing.assert_allclose(decoded["probs"], local.decode(np.array(z)), atol=1e-5)


def test_tf_serving_status_and_metadata(url):
    status = httpx.get(url + "/v1/models/vae_decoder").json()
    assert status["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
    assert httpx.get(url + "/v1/models/vae_decoder/versions/1").status_code == 200
    meta = httpx.get(url + "/v1/models/vae_encoder/metadata").json()
    assert meta["model_spec"] == {"name": "vae_encoder", "signature_name": "", "version": "1"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert list(signature["inputs"]) == ["images"]
    assert set(signature["outputs"]) == {"z_mean", "z_log_var"}
    dims = signature["inputs"]["images"]["tensor_shape"]["dim"]
    assert [d["size"] for d in dims] == ["-1", "28", "28", "1"]


def npy_with_header(header: str) -> dict:
    """A .npy body with a hand-written version-1 header (and no data), sent as .npy."""
    text = header.encode("latin1") + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


GOOD_IMAGE = np.zeros((28, 28, 1)).tolist()
BAD_REQUESTS = [
    ("/v1/encode", {"content": b"{not json"}, 400, "malformed JSON"),
    ("/v1/encode", {"content": b""}, 400, "empty request body"),
    ("/v1/encode", {"json": [1, 2]}, 400, "JSON object"),
    ("/v1/encode", {"json": {"pictures": []}}, 400, 'missing "images"'),
    ("/v1/encode", {"json": {"images": []}}, 400, "empty batch"),
    ("/v1/encode", {"json": {"images": 0.5}}, 400, "single number"),
    ("/v1/encode", {"json": {"images": [[1, 2, 3]]}}, 400, "expected [N, 28, 28, 1]"),
    ("/v1/encode", {"json": {"images": [GOOD_IMAGE, [[0.0]]]}}, 400, "ragged"),
    ("/v1/encode", {"json": {"images": [[["a"] * 28] * 28]}}, 400, "must be numbers"),
    ("/v1/encode", {"json": {"images": [[[True] * 28] * 28]}}, 400, "true or false"),
    ("/v1/encode", {"json": {"images": [[[[0.5]] * 27 + [[True]]] * 28]}}, 400, "true or false"),
    ("/v1/decode", {"json": {"z": [[0.5, False]]}}, 400, "true or false"),
    ("/v1/encode", {"json": {"images": [GOOD_IMAGE] * 300}}, 413, "above the limit of 256"),
    (
        "/v1/encode",
        {"json": {"images": [[[[0.5]] + [{"a": 0.5}] * 27] * 28]}},
        400,
        "images",
    ),
    ("/v1/encode", {"content": b'{"images": [NaN]}'}, 400, "malformed JSON"),
    ("/v1/encode", {"json": {"images": [[[2.0] * 28] * 28]}}, 400, "divide by 255"),
    ("/v1/encode", {"json": {"images": [[[1.0001] * 28] * 28]}}, 400, "got [1.0001, 1.0001]"),
    ("/v1/encode", {"json": {"images": [GOOD_IMAGE], "seed": -1}}, 400, "seed"),
    ("/v1/encode", {"json": {"images": [GOOD_IMAGE], "sample": "maybe"}}, 400, "sample"),
    ("/v1/encode", {"json": {"images": [GOOD_IMAGE] * 257}}, 413, "above the limit of 256"),
    ("/v1/encode", {"content": b'{"images": [' + b"[]," * 900_000 + b"[]]}"}, 413, "JSON lists"),
    ("/v1/decode", {"content": b'{"z": [' + b"[]," * 900_000 + b"[]]}"}, 413, "JSON lists"),
    ("/v1/encode", {"content": b"x" * 3_000_001}, 413, "byte limit"),
    ("/v1/encode", {"content": b"not npy", "headers": {"content-type": NPY}}, 400, ".npy"),
    (
        "/v1/encode",
        {
            "content": npy(np.full((1, 28, 28, 1), np.nan, np.float32)),
            "headers": {"content-type": NPY},
        },
        400,
        "NaN or Inf",
    ),
    (
        "/v1/encode",
        {
            "content": npy(np.zeros((2, 28, 28, 1), np.float32))[:-10],
            "headers": {"content-type": NPY},
        },
        400,
        "data bytes",
    ),
    ("/v1/encode", {"content": b"\x93NUMPY", "headers": {"content-type": NPY}}, 400, ".npy"),
    (
        "/v1/encode",
        {
            "headers": {"content-type": NPY},
            "content": npy_with_header("{'descr': '<f3', 'fortran_order': False, 'shape': (1,), }"),
        },
        400,
        "not a numeric type",
    ),
    (
        "/v1/encode",
        {
            "headers": {"content-type": NPY},
            "content": npy_with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 10**20), }"
            ),
        },
        400,
        "valid .npy",
    ),
    (
        "/v1/encode",
        {
            "headers": {"content-type": NPY},
            "content": npy_with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 100000000000000000000), }"
            ),
        },
        400,
        "huge",
    ),
    (
        "/v1/encode",
        {
            "headers": {"content-type": NPY},
            "content": npy_with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "1, " * 70 + "), }"
            ),
        },
        400,
        "70 dimensions",
    ),
    ("/v1/encode", {"json": {"images": [[[[[[0.0]]]]]] * 1}}, 400, "expected [N, 28, 28, 1]"),
    (
        "/v1/encode",
        {"content": b'{"images": ' + b"[" * 70 + b"0.0" + b"]" * 70 + b"}"},
        400,
        "images",
    ),
    ("/v1/encode", {"json": {"images": [GOOD_IMAGE], "seed": 10**40}}, 400, "seed"),
    ("/v1/encode?version=%C2%B2", {"json": {"images": [GOOD_IMAGE]}}, 400, "version"),
    ("/v1/encode?version=" + "9" * 5000, {"json": {"images": [GOOD_IMAGE]}}, 400, "version"),
    ("/v1/sample", {"content": b'{"n": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}"}, 400, ""),
    ("/v1/encode?version=9", {"json": {"images": [GOOD_IMAGE]}}, 404, "no version 9"),
    ("/v1/encode?version=x", {"json": {"images": [GOOD_IMAGE]}}, 400, "version"),
    ("/v1/decode", {"content": b'{"z": [[0.0, Infinity]]}'}, 400, "malformed JSON"),
    ("/v1/decode", {"json": {"z": [[0.0, 1e39]]}}, 400, "NaN or Inf"),
    ("/v1/decode", {"json": {"z": [[0.0, 3e30]]}}, 400, "overflow"),
    ("/v1/encode", {"json": {"images": [[[0.0] * 392] * 2]}}, 400, "expected [N, 28, 28, 1]"),
    ("/v1/decode", {"json": {"z": [[0.0, 1.0, 2.0]]}}, 400, "expected [N, 2]"),
    ("/v1/sample", {"json": {"n": 0}}, 400, "positive integer"),
    ("/v1/sample", {"json": {"n": "3"}}, 400, "positive integer"),
    ("/v1/sample", {"json": {"n": 257}}, 413, "above the limit"),
    ("/v1/sample", {"json": {"n": 2, "temperature": -1}}, 400, "temperature"),
    ("/v1/sample?format=gif", {"json": {"n": 2}}, 400, "unknown format"),
    (
        "/v1/models/vae_encoder:predict",
        {"json": {"instances": [GOOD_IMAGE], "inputs": []}},
        400,
        "exactly one",
    ),
    ("/v1/models/vae_encoder:predict", {"json": {"inputs": {"x": [GOOD_IMAGE]}}}, 400, '"images"'),
    (
        "/v1/models/vae_encoder:predict",
        {"json": {"signature_name": "other", "inputs": []}},
        400,
        "signature",
    ),
    ("/v1/models/vae_encoder:predict", {"json": {"instances": [[1.0]]}}, 400, "expected"),
    ("/v1/models/vae_gan:predict", {"json": {"instances": [GOOD_IMAGE]}}, 404, "unknown model"),
    (
        "/v1/models/vae_encoder/versions/2:predict",
        {"json": {"inputs": [GOOD_IMAGE]}},
        404,
        "no version 2",
    ),
    ("/v1/nothing", {"json": {}}, 404, "no such endpoint"),
]


@pytest.mark.parametrize("path,kwargs,status,message", BAD_REQUESTS)
def test_bad_input_gets_a_clear_4xx_and_the_service_keeps_serving(
    url, path, kwargs, status, message
):
    response = post(url, path, **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert post(url, "/v1/sample", json={"n": 1}).status_code == 200


def test_wrong_method_is_a_json_405_with_allow_and_head_works(url):
    response = httpx.get(url + "/v1/encode")
    assert response.status_code == 405 and "not allowed" in response.json()["error"]
    assert response.headers["allow"] == "POST"
    put = httpx.put(url + "/v1/models/vae_encoder")
    assert put.status_code == 405 and put.headers["allow"] == "GET, HEAD"
    assert httpx.get(url + "/v2/models/vae_encoder/infer").headers["allow"] == "POST"
    assert httpx.put(url + "/healthz").headers["allow"] == "GET, HEAD"
    for path in ("/healthz", "/v1/models/vae_encoder", "/v2/models/vae_decoder"):
        head = httpx.head(url + path)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(httpx.get(url + path).content)


def decoder_helpers(port: str) -> list[int]:
    """PIDs of the request-decoding helper processes of the service on ``port``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            parent_cmdline = Path(f"/proc/{parent}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline and f"\0{port}\0".encode() in parent_cmdline:
            found.append(int(entry.name))
    return found


def test_large_json_bodies_are_decoded_off_the_loop_with_the_same_answers(url, local, splits):
    """Bodies above --offload-min-bytes are decoded in a helper process: every protocol
    gives the same numbers as onnxruntime, its refusals arrive as the same 4xx, and a
    helper that dies costs one 503, not the service."""
    many = pixels(splits, 200)
    expected = local.encode(many)["z_mean"]
    body = orjson.dumps({"images": many.tolist()})
    assert len(body) > 256 * 1024  # the default --offload-min-bytes
    got = post(url, "/v1/encode", content=body).json()["z_mean"]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    predict = post(url, "/v1/models/vae_encoder:predict", json={"inputs": many.tolist()})
    np.testing.assert_allclose(predict.json()["outputs"]["z_mean"], expected, atol=1e-5)
    tensor = {"name": "images", "shape": list(many.shape), "datatype": "FP32"}
    infer = {"inputs": [{**tensor, "data": many.ravel().tolist()}]}
    v2 = post(url, "/v2/models/vae_encoder/infer", json=infer).json()
    z_mean = next(o for o in v2["outputs"] if o["name"] == "z_mean")
    np.testing.assert_allclose(np.reshape(z_mean["data"], (200, -1)), expected, atol=1e-5)
    late = post(url, "/v1/encode", content=body.replace(b'"images"', b'"pictures"'))
    assert late.status_code == 400 and 'missing "images"' in late.json()["error"]

    port = url.rsplit(":", 1)[1]
    (helper,) = decoder_helpers(port)
    os.kill(helper, signal.SIGKILL)
    statuses = [post(url, "/v1/encode", content=body).status_code for _ in range(2)]
    assert statuses in ([503, 200], [200, 200]), statuses  # the kill may land before a call
    assert decoder_helpers(port) and decoder_helpers(port) != [helper]


def test_concurrent_requests_are_coalesced_into_batches(url, local, images):
    def histogram(text: str) -> tuple[float, float, float, float]:
        """Rows and onnxruntime calls so far; their seconds, and their CPU seconds
        (none before the model's first call)."""
        label = 'model="vae_encoder/1"'
        found = [
            float(match[1]) if (match := re.search(rf"{name}\{{{label}\}} (\S+)", text)) else 0.0
            for name in (
                "vae_batch_size_sum",
                "vae_batch_size_count",
                "vae_inference_seconds_sum",
                "vae_inference_cpu_seconds_total",
            )
        ]
        return tuple(found)

    before = histogram(httpx.get(url + "/metrics").text)

    async def burst():
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            requests = [
                client.post("/v1/encode", json={"images": images[i % 6 : i % 6 + 1].tolist()})
                for i in range(48)
            ]
            return await asyncio.gather(*requests)

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    expected = local.encode(images)["z_mean"]
    for i, response in enumerate(responses):  # each caller got its own slice back
        np.testing.assert_allclose(response.json()["z_mean"][0], expected[i % 6], atol=1e-5)
    after = histogram(httpx.get(url + "/metrics").text)
    rows, calls, seconds, cpu = (a - b for a, b in zip(after, before, strict=True))
    assert rows == 48
    assert calls < 48, f"48 concurrent requests took {calls} onnxruntime calls"
    # One thread's CPU time fits within the calls' duration (a clock tick of slack).
    assert 0 < cpu <= seconds + 0.011, (cpu, seconds)


def test_structured_request_log(service):
    url, log = service
    httpx.get(url + "/healthz")
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line["path"] == "/healthz" and line["status"] == 200 for line in lines)
    assert {"ts", "method", "route", "ms"} <= set(lines[-1])


def test_overload_gets_503_with_retry_after_and_deadline_gets_504(exported_repo):
    flags = ("--max-queue", "1", "--max-batch-size", "1", "--timeout-s", "0.2")
    flags += ("--max-request-items", "4096")
    with running_service(exported_repo, *flags) as url:

        async def flood():
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                requests = [client.post("/v1/sample", json={"n": 4096}) for _ in range(12)]
                return await asyncio.gather(*requests)

        responses = asyncio.run(flood())
        statuses = sorted(r.status_code for r in responses)
        rejected = [r for r in responses if r.status_code == 503]
        assert rejected, statuses
        assert rejected[0].headers["retry-after"] == "1"
        assert "overloaded" in rejected[0].json()["error"]
        assert 504 in statuses, statuses  # 4096 one-row calls outlast the 0.2 s deadline
        # ...and the abandoned work stops at the next chunk: the service answers at once.
        assert httpx.post(url + "/v1/sample", json={"n": 1}, timeout=10).status_code == 200
        metrics = httpx.get(url + "/metrics").text
        assert re.search(r'vae_rejected_total\{model="vae_decoder/1"\} [1-9]', metrics)


def test_a_full_queue_refuses_before_parsing(exported_repo):
    flags = ("--max-queue", "1", "--max-batch-size", "1", "--max-request-items", "4096")
    flags += ("--timeout-s", "120", "--log-level", "warning")
    with running_service(exported_repo, *flags) as url:
        results: list = []

        def sample():
            results.append(httpx.post(url + "/v1/sample", json={"n": 4096}, timeout=60))

        def wait_for(pattern: str, what: str) -> None:
            deadline = time.monotonic() + 10
            while not re.search(pattern, httpx.get(url + "/metrics").text):
                assert time.monotonic() < deadline, what
                time.sleep(0.01)

        # One runs, one waits. The second starts once the first is served in slices: sent
        # together, the second could find the first still queued and be refused itself.
        threads = [threading.Thread(target=sample) for _ in range(2)]
        threads[0].start()
        wait_for(r'vae_batch_size_count\{model="vae_decoder/1"\} [1-9]', "the first never ran")
        threads[1].start()
        wait_for(r'vae_queue_depth\{model="vae_decoder/1"\} 1', "the queue never filled")
        garbled = httpx.post(url + "/v1/decode", content=b"{not json")
        garbled_v2 = httpx.post(url + "/v2/models/vae_decoder/infer", content=b"{not json")
        garbled_tf = httpx.post(url + "/v1/models/vae_decoder:predict", content=b"{not json")
        # Refused before its body is even read (a refusal must cost far less than a
        # request), and the connection stays usable: the body that follows is skipped.
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = b"POST /v1/sample HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
            sock.sendall(head)
            refusal = b""
            while b"\r\n\r\n" not in refusal:  # the 503's whole head, before any body byte
                chunk = sock.recv(65536)
                assert chunk, refusal
                refusal += chunk
            sock.sendall(b" " * 100_000 + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            after = b""
            while b'"alive"' not in after:
                chunk = sock.recv(65536)
                assert chunk, after
                after += chunk
        for thread in threads:
            thread.join(60)
        # Refused before its body is parsed: 503 (full queue), not 400 (malformed JSON).
        for answer in (garbled, garbled_v2, garbled_tf):
            assert answer.status_code == 503 and "overloaded" in answer.json()["error"]
        # The 503's head came before any of the body was sent (its body may come apart);
        # then the next request on the same connection was answered.
        assert refusal.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in refusal.lower()
        stream = refusal + after
        assert stream.count(b"HTTP/1.1 ") == 2 and b"overloaded" in stream
        assert stream[stream.rindex(b"HTTP/1.1 ") :].startswith(b"HTTP/1.1 200")
        assert [r.status_code for r in results] == [200, 200]


def test_missing_or_corrupt_repository_is_one_clear_error(tmp_path, exported_repo):
    run = [sys.executable, "-m", "serving", "--port", "0", "--repo"]
    missing = subprocess.run([*run, str(tmp_path / "none")], capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: no ONNX model repository")
    assert "Traceback" not in missing.stderr

    broken = tmp_path / "broken"
    for name in ("vae_encoder", "vae_decoder"):
        (broken / "onnx" / name / "1").mkdir(parents=True)
        (broken / "onnx" / name / "1" / "model.onnx").write_bytes(b"\x08garbage")
    corrupt = subprocess.run([*run, str(broken)], capture_output=True, text=True, cwd=REPO)
    assert corrupt.returncode == 2 and "cannot load" in corrupt.stderr
    assert "Traceback" not in corrupt.stderr

    bad_flag = subprocess.run(
        [*run, str(exported_repo), "--max-batch-size", "0"], capture_output=True, text=True
    )
    assert bad_flag.returncode == 2 and "max_batch_size must be >= 1" in bad_flag.stderr


def test_serving_imports_and_runs_without_tensorflow(exported_repo):
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class NoTensorFlow(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "keras_vae"):
                    raise ImportError(name + " is not installed")

        sys.meta_path.insert(0, NoTensorFlow())
        import serving.__main__, serving.app, serving.client
        from serving.client import LocalVae
        vae = LocalVae({str(exported_repo)!r})
        print(vae.sample(3, seed=0).shape)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(3, 28, 28, 1)"
