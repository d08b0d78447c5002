"""The OpenAPI 3 description served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from vae_contract import IMAGES, Z

_ERROR = {"description": 'bad request; body {"error": message}'}
_MATRIX = {"type": "array", "items": {}}


def _post(summary: str, body: dict[str, Any], responses: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "content": {
                    "application/json": {"schema": {"type": "object", "properties": body}},
                    "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
                }
            },
            "responses": {
                "200": responses,
                "400": _ERROR,
                "404": {"description": "unknown model or version"},
                "413": {"description": "body or batch above the limit"},
                "503": {"description": "queue full; retry after Retry-After seconds"},
                "504": {"description": "deadline exceeded"},
            },
        }
    }


def openapi() -> dict[str, Any]:
    images = {"description": "images [N, 28, 28, 1] (or [N, 28, 28] / [N, 784]) in [0, 1]"}
    images.update(_MATRIX)
    version = {"name": "version", "in": "query", "schema": {"type": "integer"}}
    paths = {
        "/v1/encode": _post(
            "Encode images into the latent posterior (z_mean, z_log_var), optionally sample z",
            {IMAGES: images, "sample": {"type": "boolean"}, "seed": {"type": "integer"}},
            {"description": "{z_mean, z_log_var[, z]}; npy: [N, k, latent], names in X-Outputs"},
        ),
        "/v1/decode": _post(
            "Decode latent vectors into Bernoulli means",
            {Z: {"description": "latent vectors [N, latent_dim]", **_MATRIX}},
            {"description": "{images}; npy or PNG grid with Accept or ?format="},
        ),
        "/v1/sample": _post(
            "Draw z ~ N(0, T^2 I) and decode",
            {
                "n": {"type": "integer", "minimum": 1},
                "seed": {"type": "integer"},
                "temperature": {"type": "number", "exclusiveMinimum": 0},
            },
            {"description": "{images, z}; npy or PNG grid with Accept or ?format="},
        ),
        "/v1/models/{name}:predict": _post(
            "TF Serving REST predict (row: instances, columnar: inputs)",
            {"instances": _MATRIX, "inputs": {}, "signature_name": {"type": "string"}},
            {"description": "{predictions} or {outputs}"},
        ),
        "/v1/models/{name}": {"get": {"summary": "TF Serving model version status"}},
        "/v1/models/{name}/metadata": {"get": {"summary": "TF Serving signature metadata"}},
        "/v2": {"get": {"summary": "Open Inference Protocol: server metadata"}},
        "/v2/health/live": {"get": {"summary": "Open Inference Protocol: liveness"}},
        "/v2/health/ready": {"get": {"summary": "Open Inference Protocol: readiness"}},
        "/v2/models/{name}": {"get": {"summary": "Open Inference Protocol: model metadata"}},
        "/v2/models/{name}/ready": {"get": {"summary": "Open Inference Protocol: model ready"}},
        "/v2/models/{name}/infer": {
            "post": {
                "summary": "Open Inference Protocol inference (JSON or binary tensor data)",
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                    }
                },
                "responses": {"200": {"description": "outputs"}, "400": _ERROR},
            }
        },
        "/healthz": {"get": {"summary": "liveness"}},
        "/readyz": {"get": {"summary": "readiness: models loaded and warmed up"}},
        "/metrics": {"get": {"summary": "Prometheus metrics"}},
    }
    for path in ("/v1/encode", "/v1/decode", "/v1/sample"):
        paths[path]["post"]["parameters"] = [version]
    return {
        "openapi": "3.1.0",
        "info": {"title": "keras-vae serving", "version": "1"},
        "paths": paths,
    }
