"""Answers in the formats clients ask for: JSON (default), ``.npy`` or a PNG grid."""

from __future__ import annotations

from typing import Any

import numpy as np

from serving import codec
from serving.asgi import Request, Response
from serving.codec import JSON, NPY, PNG
from serving.errors import ApiError
from serving.params import decimal, describe
from serving.png import encode_png, grid
from vae_contract import IMAGES, OUTPUTS_HEADER

FORMATS = {"json": JSON, "npy": NPY, "png": PNG}
MAX_SCALE = 8  # 8 × 122 pixels for 16 samples; 64 samples at 8× are already 1,936 wide


def json_response(payload: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(status, codec.dump_json(payload), JSON, headers or {})


def error_response(error: ApiError) -> Response:
    return json_response({"error": error.message}, error.status, error.headers)


def sends_npy(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip() == NPY


def wants(request: Request) -> str:
    """The answer's media type: ``?format=`` first, then the Accept header, else JSON."""
    fmt = request.query.get("format")
    if fmt is not None:
        if fmt not in FORMATS:
            raise ApiError(400, f"unknown format {fmt[:20]!r}; choose json, npy or png")
        return FORMATS[fmt]
    accept = request.headers.get("accept", "")
    for media in (NPY, PNG):
        if media in accept:
            return media
    return JSON


def png_scale(request: Request) -> int:
    """``?scale=`` of a PNG answer: how many screen pixels per model pixel (default 1)."""
    raw = request.query.get("scale")
    if raw is None:
        return 1
    number = decimal(raw)
    if number is None or not 1 <= number <= MAX_SCALE:
        raise ApiError(400, f"scale must be an integer from 1 to {MAX_SCALE}, got {describe(raw)}")
    return number


def images_response(request: Request, images: np.ndarray, extra: dict) -> Response:
    """Decoded images as the client asked. They are Bernoulli means, in [0, 1] as the
    OpenAPI document says: onnxruntime's float32 sigmoid can return 1.0000001."""
    images = np.clip(images, 0.0, 1.0)
    media, scale = wants(request), png_scale(request)
    if media == PNG:
        return Response(200, encode_png(grid(images, scale=scale)), PNG)
    if media == NPY:
        return Response(200, codec.dump_npy(images), NPY)
    return json_response({**extra, IMAGES: images})


def arrays_response(request: Request, meta: dict, outputs: dict[str, np.ndarray]) -> Response:
    """Several same-length arrays: JSON fields, or one stacked ``.npy`` named by X-Outputs."""
    if wants(request) == NPY:
        names = list(outputs)
        stacked = np.stack([outputs[n] for n in names], axis=1)
        return Response(200, codec.dump_npy(stacked), NPY, {OUTPUTS_HEADER: ",".join(names)})
    return json_response({**meta, **outputs})
