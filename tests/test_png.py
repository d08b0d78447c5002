"""PNG grids from the real service: ``?scale=`` enlarges them, and a bad scale is a 400.

The pictures are read back with Pillow, a decoder independent of ``serving/png.py``.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from serving.client import VaeClient
from tests.serving_helpers import running_service

GRID_16 = 4 * (28 + 2) + 2  # 16 images: 4 × 4 tiles of 28 pixels, 2 pixels of padding


@pytest.fixture(scope="module")
def service(exported_repo):
    with running_service(exported_repo, "--log-level", "warning") as url:
        yield url


def picture(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.mode == "L"
    return np.asarray(image)


def test_scale_enlarges_every_pixel_of_the_sample_grid(service):
    body = {"n": 16, "seed": 0}
    plain = picture(httpx.post(f"{service}/v1/sample?format=png", json=body))
    assert plain.shape == (GRID_16, GRID_16)
    assert plain.max() > 0  # digits were drawn, not only the black padding
    scaled = picture(httpx.post(f"{service}/v1/sample?format=png&scale=4", json=body))
    assert scaled.shape == (4 * GRID_16, 4 * GRID_16)
    np.testing.assert_array_equal(scaled, np.kron(plain, np.ones((4, 4), np.uint8)))
    with VaeClient(service) as client:
        png = client.sample_png(16, seed=0, scale=2)
    assert Image.open(io.BytesIO(png)).size == (2 * GRID_16, 2 * GRID_16)


def test_scale_applies_to_decoded_grids_asked_for_by_accept(service):
    z = np.zeros((3, 2), np.float32).tolist()  # 3 images: a 2 × 2 grid, latent size 2
    answer = httpx.post(
        f"{service}/v1/decode?scale=8", json={"z": z}, headers={"accept": "image/png"}
    )
    assert picture(answer).shape == (8 * (2 * 30 + 2), 8 * (2 * 30 + 2))


@pytest.mark.parametrize("scale", ["0", "9", "-1", "2.5", "four", "²", "", "1" * 30])
def test_a_scale_outside_1_to_8_is_a_400_naming_it(service, scale):
    answer = httpx.post(
        f"{service}/v1/sample", params={"format": "png", "scale": scale}, json={"n": 1}
    )
    assert answer.status_code == 400, answer.text
    assert "scale must be an integer from 1 to 8" in answer.json()["error"]
