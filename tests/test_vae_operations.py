"""/v1/score, /v1/reconstruct, /v1/interpolate on the real service, against the estimator
of `make evaluate` and the ONNX graphs run in-process."""

from __future__ import annotations

import io
import json
import struct

import httpx
import numpy as np
import pytest

from keras_vae.iwae import evaluate_likelihood
from serving.client import LocalVae, VaeClient
from tests.serving_helpers import running_service
from vae_contract import Z_LOG_VAR, Z_MEAN, likelihood, score_reference

FIGURES = ("log_likelihood", "elbo", "reconstruction", "kl")


@pytest.fixture(scope="module")
def url(exported_repo):
    with running_service(exported_repo, "--timeout-s", "60") as url:
        yield url


@pytest.fixture(scope="module")
def binary(splits):
    """Test images binarized as `make evaluate` binarizes them (fixed seed)."""
    from keras_vae.data import held_out_inputs

    return np.asarray(held_out_inputs(splits.test_images[:120], "dynamic"), np.float32)


def post(url: str, path: str, **kwargs) -> httpx.Response:
    return httpx.post(url + path, timeout=60, **kwargs)


def onnx_functions(local: LocalVae):
    def encode(x):
        outputs = local.encoder.run(x)
        return outputs[Z_MEAN], outputs[Z_LOG_VAR]

    return encode, lambda z: likelihood.decoder_logits(local.decoder.run(z))


def test_score_is_the_evaluation_estimator(url, local, binary):
    answer = post(url, "/v1/score", json={"images": binary.tolist(), "k": 100, "seed": 7})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["k"], body["seed"], body["version"]) == (100, 7, 1)
    figures = {name: np.asarray(body[name]) for name in FIGURES}
    assert all(v.shape == (120,) and np.isfinite(v).all() for v in figures.values())
    # the same noise in-process gives the same numbers
    mine = local.score(binary, k=100, seed=7)
    for name in FIGURES:
        np.testing.assert_allclose(figures[name], mine[name], rtol=1e-5, atol=1e-3)
    # the decomposition and the bound's order: ELBO <= IWAE estimate, KL >= 0
    np.testing.assert_allclose(figures["elbo"], figures["reconstruction"] - figures["kl"])
    assert (figures["kl"] >= 0).all() and (figures["reconstruction"] <= 0).all()
    assert figures["log_likelihood"].mean() >= figures["elbo"].mean()
    # `make evaluate`'s estimator, batched its own way (other noise): the means agree
    encode, decode = onnx_functions(local)
    evaluated = evaluate_likelihood(binary, encode, decode, k=100, seed=7, progress=False)
    assert abs(-figures["log_likelihood"].mean() - evaluated["test_nll"]) < 0.05
    assert abs(figures["kl"].mean() - evaluated["test_kl"]) < 1e-3


def test_score_over_npy_with_the_client_and_replayable_seeds(url, local, binary):
    with VaeClient(url) as client:
        figures = client.score(binary[:10], k=20, seed=3)
    assert set(figures) == set(FIGURES)
    np.testing.assert_allclose(
        figures["log_likelihood"],
        local.score(binary[:10], k=20, seed=3)["log_likelihood"],
        rtol=1e-5,
    )
    first = post(url, "/v1/score", json={"images": binary[:2].tolist(), "k": 5}).json()
    replay = {"images": binary[:2].tolist(), "k": 5, "seed": first["seed"]}
    assert post(url, "/v1/score", json=replay).json()["log_likelihood"] == first["log_likelihood"]


def test_more_samples_tighten_the_bound(local, binary):
    few = local.score(binary[:60], k=1, seed=0)["log_likelihood"].mean()
    many = local.score(binary[:60], k=200, seed=0)["log_likelihood"].mean()
    assert many > few  # K=1 is the ELBO; the bound rises with K


def test_reconstruct_json_npy_and_png(url, local, binary):
    body = post(url, "/v1/reconstruct", json={"images": binary[:4].tolist()}).json()
    mine = local.reconstruct(binary[:4])
    np.testing.assert_allclose(np.asarray(body["images"]), mine["images"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(body["z"]), local.encode(binary[:4])[Z_MEAN], atol=1e-5)
    np.testing.assert_allclose(body["reconstruction"], mine["reconstruction"], rtol=1e-4)
    assert all(value < 0 for value in body["reconstruction"])
    with VaeClient(url) as client:
        sampled = client.reconstruct(binary[:4], sample=True, seed=5)
        again = client.reconstruct(binary[:4], sample=True, seed=5)
    np.testing.assert_array_equal(sampled["z"], again["z"])
    assert not np.allclose(sampled["z"], mine["z"])
    png = post(url, "/v1/reconstruct?format=png&scale=2", json={"images": binary[:20].tolist()})
    assert png.headers["content-type"] == "image/png"
    width, height = struct.unpack(">II", png.content[16:24])
    # 16 columns; rows: originals 0-15, reconstructions 0-15, originals 16-19, theirs
    assert (width, height) == (2 * (16 * 30 + 2), 2 * (4 * 30 + 2))


def test_interpolate_between_images_and_latents(url, local, binary):
    body = post(url, "/v1/interpolate", json={"images": binary[:2].tolist(), "steps": 5}).json()
    z = np.asarray(body["z"])
    ends = local.encode(binary[:2])[Z_MEAN]
    np.testing.assert_allclose(z[[0, -1]], ends, atol=1e-5)
    np.testing.assert_allclose(z[2], ends.mean(axis=0), atol=1e-5)  # linear: the midpoint
    np.testing.assert_allclose(np.asarray(body["images"]), local.decode(z), atol=1e-5)
    a, b = np.array([3.0, 0.0]), np.array([0.0, 3.0])
    arc = post(
        url, "/v1/interpolate", json={"z": [a.tolist(), b.tolist()], "method": "spherical"}
    ).json()
    norms = np.linalg.norm(np.asarray(arc["z"]), axis=1)
    np.testing.assert_allclose(norms, 3.0, rtol=1e-5)  # along the circle, not the chord
    with VaeClient(url) as client:
        path = client.interpolate(a, b, steps=3)
    np.testing.assert_allclose(path["z"][1], [1.5, 1.5], atol=1e-6)
    strip = post(url, "/v1/interpolate?format=png", json={"z": [a.tolist(), b.tolist()]})
    assert struct.unpack(">II", strip.content[16:24]) == (8 * 30 + 2, 32)


def test_score_reference_recorded_at_export(url, exported_repo, local, binary, tmp_path):
    answer = httpx.get(url + "/v1/score/reference")
    assert answer.status_code == 200, answer.text
    reference = answer.json()
    assert (reference["version"], reference["dataset"], reference["k"]) == (1, "mnist", 100)
    assert sum(reference["counts"]) == reference["images"] == 200  # the parity examples
    edges = np.asarray(reference["bin_edges"])
    assert len(edges) == len(reference["counts"]) + 1 and (np.diff(edges) > 0).all()
    q = reference["quantiles"]
    assert edges[0] <= q["0.01"] <= q["0.5"] <= q["0.99"] <= edges[-1]
    # the same figures as scoring the export's held-out images now: their mean agrees
    scored = local.score(binary[:120], k=100, seed=0)["log_likelihood"].mean()
    assert abs(scored - reference["mean"]) < 10  # other images (120 of the 200): same scale
    # a manifest without one (an older export): None, which the route turns into a 404
    manifest = json.loads((exported_repo / "onnx/vae_decoder/1/manifest.json").read_text())
    manifest.pop(score_reference.KEY)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert score_reference.read_reference(tmp_path) is None


def zeros(count: int = 2, shape: tuple[int, ...] = (28, 28, 1)) -> list:
    return np.zeros((count, *shape), np.float32).tolist()


@pytest.mark.parametrize(
    "path, payload, status, words",
    [
        ("/v1/score", {"images": zeros(), "k": 0}, 400, "k must be an integer from 1 to 1000"),
        ("/v1/score", {"images": zeros(), "k": 1001}, 400, "k must be"),
        ("/v1/score", {"images": zeros(), "k": "many"}, 400, "k must be"),
        ("/v1/score", {"images": zeros(200), "k": 1000}, 413, "k x images"),
        ("/v1/score", {"images": zeros(), "seed": -1}, 400, "seed"),
        ("/v1/reconstruct", {"images": zeros(), "sample": "perhaps"}, 400, "sample must be"),
        ("/v1/reconstruct", {"images": zeros(3, (27, 28, 1))}, 400, "images"),
        ("/v1/interpolate", {"images": zeros(), "steps": 1}, 400, "steps must be an integer"),
        ("/v1/interpolate", {"images": zeros(), "steps": 65}, 400, "steps must be"),
        ("/v1/interpolate", {"images": zeros(), "method": "cubic"}, 400, "one of linear"),
        ("/v1/interpolate", {"images": zeros(3)}, 400, "needs two images, got 3"),
        ("/v1/interpolate", {"images": zeros(), "z": [[0.0, 0.0]] * 2}, 400, 'either "images"'),
        ("/v1/interpolate", {}, 400, 'send either "images"'),
        ("/v1/interpolate", {"z": [[0.0, 1.0]]}, 400, "two latent vectors, got 1"),
        ("/v1/interpolate", {"z": [[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]}, 400, "z"),
    ],
)
def test_bad_input_names_the_field(url, path, payload, status, words):
    answer = post(url, path, json=payload)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]
    assert httpx.get(url + "/readyz").status_code == 200


@pytest.mark.parametrize("query, nan, words", [("?k=0", False, "k must be"), ("", True, "NaN")])
def test_npy_scoring_options_go_in_the_query(url, binary, query, nan, words):
    images = binary[:3].copy()
    if nan:
        images[1, 3, 3, 0] = np.nan
    buffer = io.BytesIO()
    np.save(buffer, images)
    headers = {"content-type": "application/x-npy"}
    answer = post(url, "/v1/score" + query, content=buffer.getvalue(), headers=headers)
    assert answer.status_code == 400 and words in answer.json()["error"], answer.text
