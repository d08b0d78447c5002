"""``/openapi.json`` against the real service, checked by schemathesis with every check.

The document is what other teams generate clients from. schemathesis sends requests its
schemas allow (they must be accepted) and requests they forbid (they must be refused with
a 4xx), tries other methods (405 with Allow), and validates every answer's status,
headers, media type and body against the document, so a handler and its description
cannot drift apart unnoticed. It runs through its command line, as the README shows,
with a fixed seed and few examples per operation so that it is reproducible; nothing is
fetched from the network. The server fixes it led to are pinned by the unit tests below.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import orjson
import pytest

from serving import params
from serving.asgi import Request
from serving.errors import ApiError
from serving.responses import images_response
from tests.conftest import REPO
from tests.serving_helpers import running_service

# Its coverage phase sends every boundary (max_items and max_items + 1 items, ...) whatever
# the number of examples: a small limit, which the document states, keeps it to ~30 s.
MAX_ITEMS = 4


def test_openapi_document_passes_schemathesis(exported_repo, tmp_path):
    flags = ("--max-request-items", str(MAX_ITEMS))
    with running_service(exported_repo, *flags, log=tmp_path / "service.log") as url:
        document = httpx.get(url + "/openapi.json").json()
        # Built from the loaded models and the flags: this decoder takes z of size 2.
        z = document["components"]["schemas"]["vae_decoder.z"]
        assert z["items"]["minItems"] == z["items"]["maxItems"] == 2
        assert z["maxItems"] == MAX_ITEMS
        command = [
            *(sys.executable, "-m", "schemathesis.cli"),
            *("--config-file", str(REPO / "schemathesis.toml")),
            *("run", url + "/openapi.json", "--checks", "all"),
            *("--seed", "1", "--max-examples", "3", "--workers", "1"),
            *("--generation-database", "none", "--no-color"),
        ]
        # cwd: its cache folder (.schemathesis) goes there, not into the repository.
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    report = result.stdout[-30000:] + result.stderr[-5000:]
    assert result.returncode == 0, report
    assert "No issues found" in result.stdout, report


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
