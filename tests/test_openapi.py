"""What schemathesis found against ``/openapi.json``, pinned: the server fixes it needed."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from serving import params
from serving.asgi import Request
from serving.errors import ApiError
from serving.responses import images_response


def test_integral_floats_are_integers():
    """JSON Schema, and so the document, counts 5.0 as an integer: n and seed take it."""
    assert params.positive_int(155.0, "n") == 155
    assert params.seed(4356.0) == 4356 and params.seed("12") == 12 and params.seed(None) is None
    for bad in (1.5, True, -1.0, 2.0**64, 1e300):
        with pytest.raises(ApiError):
            params.seed(bad)
    for bad in (0.0, 2.5, False):
        with pytest.raises(ApiError):
            params.positive_int(bad, "n")


def test_decoded_images_are_probabilities():
    """onnxruntime's float32 sigmoid returned 1.0000001 (schemathesis found it on
    /v1/sample): the answer clips Bernoulli means to [0, 1], as the document says."""
    request = Request("POST", "/v1/decode", {}, {}, b"", "")
    images = np.array([1.0000001, 0.5, -1e-9], np.float32).reshape(1, 1, 3, 1)
    answer = orjson.loads(images_response(request, images, {}).body)
    values = np.array(answer["images"]).ravel()
    assert values.max() == 1.0 and values.min() == 0.0
