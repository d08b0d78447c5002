"""The Open Inference Protocol (KServe v2), checked with the client Triton users run."""

from __future__ import annotations

import httpx
import numpy as np
import orjson
import pytest

tritonclient_http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from tests.serving_helpers import pixels, running_service  # noqa: E402


@pytest.fixture(scope="module")
def url(exported_repo):
    flags = ("--max-request-items", "256", "--log-level", "warning")
    with running_service(exported_repo, *flags) as url:
        yield url


@pytest.fixture(scope="module")
def client(url):
    client = tritonclient_http.InferenceServerClient(url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def images(splits):
    return pixels(splits, 5)


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("vae_encoder") and client.is_model_ready("vae_decoder", "1")
    assert not client.is_model_ready("vae_gan")
    server = client.get_server_metadata()
    assert server["name"] == "keras-vae" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("vae_encoder")
    assert meta["name"] == "vae_encoder" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 28, 28, 1]}]
    assert meta["outputs"] == [
        {"name": "z_mean", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "z_log_var", "datatype": "FP32", "shape": [-1, 2]},
    ]
    decoder = client.get_model_metadata("vae_decoder", model_version="1")
    assert decoder["inputs"][0] == {"name": "z", "datatype": "FP32", "shape": [-1, 2]}
    assert [o["name"] for o in decoder["outputs"]] == ["probs", "logits"]


@pytest.mark.parametrize("binary", [True, False])
def test_infer_encoder_and_decoder_match_onnxruntime(client, local, images, binary):
    inputs = tritonclient_http.InferInput("images", list(images.shape), "FP32")
    inputs.set_data_from_numpy(images, binary_data=binary)
    outputs = [
        tritonclient_http.InferRequestedOutput(name, binary_data=binary)
        for name in ("z_mean", "z_log_var")
    ]
    result = client.infer("vae_encoder", [inputs], outputs=outputs, request_id="r1")
    expected = local.encode(images)
    for name in ("z_mean", "z_log_var"):
        got = result.as_numpy(name)
        assert got.shape == (5, 2) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected[name], atol=1e-5)
    assert result.get_response()["id"] == "r1"
    assert result.get_response()["model_version"] == "1"

    z = expected["z_mean"]
    latent = tritonclient_http.InferInput("z", list(z.shape), "FP32")
    latent.set_data_from_numpy(z, binary_data=binary)
    wanted = [tritonclient_http.InferRequestedOutput("probs", binary_data=binary)]
    decoded = client.infer("vae_decoder", [latent], outputs=wanted, model_version="1")
    probs = decoded.as_numpy("probs")
    assert probs.shape == (5, 28, 28, 1)
    np.testing.assert_allclose(probs, local.decode(z), atol=1e-5)
    assert decoded.as_numpy("logits") is None  # only what was asked for


def test_an_empty_output_list_means_every_output(url):
    answer = httpx.post(url + "/v2/models/vae_decoder/infer", json=v2(outputs=[])).json()
    assert [o["name"] for o in answer["outputs"]] == ["probs", "logits"]


def test_all_outputs_by_default_and_nested_data(url, local, images):
    body = {
        "inputs": [
            {"name": "images", "shape": [2, 28, 28, 1], "datatype": "FP32",
             "data": images[:2].tolist()}
        ]
    }  # fmt: skip
    answer = httpx.post(url + "/v2/models/vae_encoder/infer", json=body).json()
    assert [o["name"] for o in answer["outputs"]] == ["z_mean", "z_log_var"]
    z_mean = np.array(answer["outputs"][0]["data"]).reshape(answer["outputs"][0]["shape"])
    np.testing.assert_allclose(z_mean, local.encode(images[:2])["z_mean"], atol=1e-5)


def test_a_malformed_request_raises_tritonclients_exception_with_our_message(client, images):
    inputs = tritonclient_http.InferInput("images", [5, 28, 28, 1], "FP64")
    inputs.set_data_from_numpy(images.astype(np.float64), binary_data=True)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("vae_encoder", [inputs])
    assert "has datatype 'FP64'; vae_encoder takes FP32" in raised.value.message()

    wrong = tritonclient_http.InferInput("pixels", [5, 28, 28, 1], "FP32")
    wrong.set_data_from_numpy(images)
    with pytest.raises(InferenceServerException, match="unknown input 'pixels'"):
        client.infer("vae_encoder", [wrong])
    with pytest.raises(InferenceServerException, match="unknown model 'vae_gan'"):
        client.get_model_metadata("vae_gan")


def v2(tensor: dict | None = None, **extra) -> dict:
    base = {"name": "z", "shape": [1, 2], "datatype": "FP32", "data": [0.0, 0.0]}
    return {"inputs": [{**base, **(tensor or {})}], **extra}


def binary_request(header: dict, blob: bytes, declared: int | None = None) -> dict:
    head = orjson.dumps(header)
    length = len(head) if declared is None else declared
    return {
        "content": head + blob,
        "headers": {"inference-header-content-length": str(length)},
    }


ZERO = np.zeros((1, 2), np.float32).tobytes()
BINARY_Z = {"name": "z", "shape": [1, 2], "datatype": "FP32", "parameters": {}}
BAD_V2 = [
    ({"json": v2({"datatype": "INT32"})}, "has datatype 'INT32'"),
    ({"json": v2({"shape": [1, 3]})}, "has shape [1, 3]; vae_decoder takes [-1, 2]"),
    ({"json": v2({"shape": [2, 2]})}, "shape [2, 2] holds 4 values but data has 2"),
    ({"json": v2({"name": "x"})}, "unknown input 'x'"),
    ({"json": v2(outputs=[{"name": "pixels"}])}, "unknown output 'pixels'"),
    ({"content": orjson.dumps(v2()).replace(b"0.0]", b"NaN]")}, "malformed JSON"),
    ({"json": v2({"data": [0.0, 1e39]})}, "NaN or Inf"),
    ({"json": v2({"shape": [0, 2], "data": []})}, "empty batch"),
    ({"json": v2({"shape": "1,2"})}, '"shape"'),
    ({"json": {"inputs": []}}, "list of one tensor"),
    ({"json": v2(outputs=[{"name": "probs"}, {"name": "probs"}])}, "asked for twice"),
    ({"json": v2(outputs=[{"name": "probs", "parameters": {"classification": 2}}])},
     "classification"),
    ({"json": [1]}, "JSON object"),
    ({"content": b"{not json"}, "malformed JSON"),
    (binary_request({"inputs": [{**BINARY_Z, "parameters": {"binary_data_size": 4}}]}, ZERO),
     "binary_data_size is 4 bytes but 8 bytes follow"),
    (binary_request({"inputs": [{**BINARY_Z, "parameters": {"binary_data_size": 12}}]},
                    ZERO + ZERO[:4]),
     "shape [1, 2] of FP32 needs 8"),
    (binary_request({"inputs": [{**BINARY_Z, "parameters": {"binary_data_size": 8}}]}, ZERO,
                    declared=10_000),
     "Inference-Header-Content-Length 10000 is larger than the body"),
    (binary_request(v2(), ZERO), "no input has binary_data_size"),
    ({"json": v2({"shape": [300, 2], "data": [0.0] * 600})}, "above the limit of 256"),
    ({"json": v2({"data": [0.0, 2e4]})}, "overflow"),
    ({"json": v2({"parameters": None})}, "parameters must be an object"),
    ({"json": {**v2(), "parameters": False}}, "parameters must be an object"),
    ({"json": v2(outputs=False)}, '"outputs" must be a list'),
    ({"json": v2({"parameters": {"binary_data_size": None}})}, "non-negative integer"),
]  # fmt: skip


@pytest.mark.parametrize("kwargs, message", BAD_V2)
def test_malformed_v2_requests_get_a_400_naming_the_problem(url, kwargs, message):
    answer = httpx.post(url + "/v2/models/vae_decoder/infer", **kwargs)
    assert answer.status_code in (400, 413), answer.text
    assert message in answer.json()["error"]
    assert httpx.get(url + "/v2/health/ready").status_code == 200


def test_the_infer_handler_steps_alone(exported_repo, local, images):
    """decode -> run -> encode, each step called directly on a real model, no server."""
    from serving import kserve
    from vae_contract import onnx_versions
    from vae_runtime import OnnxModel

    model = OnnxModel(onnx_versions(exported_repo)["vae_encoder"][1], "vae_encoder", 1)
    header = orjson.dumps(
        {
            "id": "a",
            "inputs": [
                {"name": "images", "shape": [5, 28, 28, 1], "datatype": "FP32",
                 "parameters": {"binary_data_size": images.nbytes}}
            ],
            "outputs": [{"name": "z_log_var", "parameters": {"binary_data": True}}],
        }
    )  # fmt: skip
    body = header + images.tobytes()
    parsed = kserve.parse_infer(body, model, str(len(header)), max_items=8)
    assert parsed.inputs.shape == (5, 28, 28, 1) and parsed.outputs == ["z_log_var"]
    response = kserve.format_infer(model, parsed, model.run(parsed.inputs))
    length = int(response.headers[kserve.HEADER_LENGTH])
    document = orjson.loads(response.body[:length])
    assert document["id"] == "a" and document["outputs"][0]["parameters"]["binary_data_size"] == 40
    got = np.frombuffer(response.body[length:], "<f4").reshape(5, 2)
    np.testing.assert_allclose(got, local.encode(images)["z_log_var"], atol=1e-5)
