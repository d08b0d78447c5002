"""The HTTP API: thin handlers that validate, delegate to the batchers, and answer.

Convenience endpoints (``/v1/encode``, ``/v1/sample``, ``/v1/decode``), the TF
Serving REST API (``/v1/models/...``), and the operator endpoints (health,
readiness, Prometheus metrics, OpenAPI). Every error is JSON ``{"error": ...}``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving import codec, tfserving
from serving.codec import JSON, NPY, PNG
from serving.errors import ApiError
from serving.openapi import openapi
from serving.png import encode_png, grid
from serving.service import Service

ENCODER, DECODER = "vae_encoder", "vae_decoder"
MAX_TEMPERATURE = 10.0
access_log = logging.getLogger("serving.access")
error_log = logging.getLogger("serving.error")
Handler = Callable[[Request], Awaitable[Response]]


def json_response(payload, status: int = 200, headers: dict | None = None) -> Response:
    return Response(codec.dump_json(payload), status, headers, media_type=JSON)


def error_response(error: ApiError) -> Response:
    return json_response({"error": error.message}, error.status, error.headers)


def build_app(service: Service) -> Starlette:
    config = service.config

    def endpoint(route: str, handler: Handler) -> Handler:
        """Time, count and log each request; turn every failure into a JSON error."""

        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except ApiError as error:
                response = error_response(error)
            except Exception:  # a bug must not take the service down
                error_log.exception("unhandled error on %s", request.url.path)
                response = error_response(ApiError(500, "internal error; see the service log"))
            seconds = time.perf_counter() - started
            service.metrics.observe_request(route, response.status_code, seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    json.dumps(
                        {
                            "ts": round(time.time(), 3),
                            "method": request.method,
                            "path": request.url.path,
                            "route": route,
                            "status": response.status_code,
                            "ms": round(seconds * 1000, 3),
                            "client": request.client.host if request.client else None,
                        }
                    )
                )
            return response

        return wrapped

    async def read_body(request: Request) -> bytes:
        limit = config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ApiError(400, f"invalid Content-Length {declared!r}")
            if int(declared) > limit:
                raise ApiError(413, f"body of {declared} bytes is above the {limit}-byte limit")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"body is above the {limit}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    def is_npy(request: Request) -> bool:
        return request.headers.get("content-type", "").split(";")[0].strip() == NPY

    def wants(request: Request) -> str:
        fmt = request.query_params.get("format")
        if fmt is not None:
            formats = {"json": JSON, "npy": NPY, "png": PNG}
            if fmt not in formats:
                raise ApiError(400, f"unknown format {fmt!r}; choose json, npy or png")
            return formats[fmt]
        accept = request.headers.get("accept", "")
        for media in (NPY, PNG):
            if media in accept:
                return media
        return JSON

    def version_param(request: Request) -> int | None:
        value = request.query_params.get("version")
        if value is None:
            return None
        if not value.isdigit():
            raise ApiError(400, f"version must be a positive integer, got {value!r}")
        return int(value)

    def bool_value(value, what: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise ApiError(400, f"{what} must be true or false, got {value!r}")

    def seed_value(value, what: str = "seed") -> int | None:
        if value is None:
            return None
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ApiError(400, f"{what} must be a non-negative integer, got {value!r}")
        return value

    async def json_object(request: Request) -> dict:
        payload = codec.parse_json(await read_body(request))
        if not isinstance(payload, dict):
            raise ApiError(400, "request body must be a JSON object")
        return payload

    def images_response(request: Request, images: np.ndarray, extra: dict) -> Response:
        media = wants(request)
        if media == PNG:
            return Response(encode_png(grid(images)), media_type=PNG)
        if media == NPY:
            return Response(codec.dump_npy(images), media_type=NPY)
        return json_response({**extra, "images": images})

    def latent_response(request: Request, model, outputs: dict) -> Response:
        if wants(request) == NPY:
            names = list(outputs)
            stacked = np.stack([outputs[n] for n in names], axis=1)
            return Response(
                codec.dump_npy(stacked), media_type=NPY, headers={"X-Outputs": ",".join(names)}
            )
        return json_response({"model": model.name, "version": model.version, **outputs})

    # --- convenience API -------------------------------------------------------------
    async def encode(request: Request) -> Response:
        model = service.model(ENCODER, version_param(request))
        if is_npy(request):
            value, options = codec.parse_npy(await read_body(request)), dict(request.query_params)
        else:
            options = await json_object(request)
            if "images" not in options:
                raise ApiError(400, 'missing "images": a list of 28x28 images in [0, 1]')
            value = options["images"]
        images = codec.check_batch(
            codec.to_array(value, "images"), model.item_shape, "images", config.max_request_items
        )
        codec.check_pixels(images)
        sample = bool_value(options.get("sample", False), "sample")
        seed = seed_value(options.get("seed"))
        outputs = await service.run(model, images)
        if sample:
            noise = np.random.default_rng(seed).standard_normal(outputs["z_mean"].shape)
            z = outputs["z_mean"] + np.exp(0.5 * outputs["z_log_var"]) * noise
            outputs = {**outputs, "z": z.astype(np.float32)}
        return latent_response(request, model, outputs)

    async def decode(request: Request) -> Response:
        model = service.model(DECODER, version_param(request))
        if is_npy(request):
            value = codec.parse_npy(await read_body(request))
        else:
            payload = await json_object(request)
            if "z" not in payload:
                raise ApiError(
                    400, f'missing "z": a list of latent vectors of size {model.latent_dim}'
                )
            value = payload["z"]
        z = codec.check_batch(
            codec.to_array(value, "z"), model.item_shape, "z", config.max_request_items
        )
        outputs = await service.run(model, z)
        return images_response(
            request, outputs["probs"], {"model": model.name, "version": model.version}
        )

    async def sample(request: Request) -> Response:
        model = service.model(DECODER, version_param(request))
        body = await read_body(request)
        payload = codec.parse_json(body) if body else {}
        if not isinstance(payload, dict):
            raise ApiError(400, "request body must be a JSON object")
        n = payload.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ApiError(400, f"n must be a positive integer, got {n!r}")
        if n > config.max_request_items:
            raise ApiError(413, f"n={n} is above the limit of {config.max_request_items}")
        temperature = payload.get("temperature", 1.0)
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0 < temperature <= MAX_TEMPERATURE
        ):
            raise ApiError(
                400,
                f"temperature must be a number in (0, {MAX_TEMPERATURE:g}], got {temperature!r}",
            )
        seed = seed_value(payload.get("seed"))
        rng = np.random.default_rng(seed)
        z = (temperature * rng.standard_normal((n, model.latent_dim))).astype(np.float32)
        outputs = await service.run(model, z)
        return images_response(
            request, outputs["probs"], {"model": model.name, "version": model.version, "z": z}
        )

    # --- TF Serving REST API ---------------------------------------------------------
    model_path = re.compile(
        r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?P<tail>/metadata|:predict)?$"
    )

    async def tf_serving(request: Request) -> Response:
        match = model_path.match(request.path_params["rest"])
        if not match:
            raise ApiError(404, f"no such endpoint {request.url.path}")
        raw_version, tail = match["version"], match["tail"]
        if raw_version is not None and not raw_version.isdigit():
            raise ApiError(400, f"version must be a positive integer, got {raw_version!r}")
        version = None if raw_version is None else int(raw_version)
        model = service.model(match["name"], version)
        if tail == ":predict":
            if request.method != "POST":
                raise ApiError(405, "use POST for :predict")
            value, rows = tfserving.parse_predict(await json_object(request), model)
            inputs = codec.check_batch(
                codec.to_array(value, model.input_name),
                model.item_shape,
                model.input_name,
                config.max_request_items,
            )
            if model.name == ENCODER:
                codec.check_pixels(inputs)
            outputs = await service.run(model, inputs)
            return json_response(tfserving.format_predict(outputs, rows))
        if request.method != "GET":
            raise ApiError(405, f"use GET for {request.url.path}")
        if tail == "/metadata":
            return json_response(tfserving.metadata(model))
        versions = [model.version] if version is not None else list(service.models[model.name])
        return json_response(tfserving.version_status(versions))

    # --- operations ------------------------------------------------------------------
    async def healthz(request: Request) -> Response:
        return json_response({"status": "alive"})

    async def readyz(request: Request) -> Response:
        if not service.ready:
            return json_response({"status": "starting"}, 503)
        return json_response({"status": "ready", "models": service.describe()})

    async def metrics(request: Request) -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi_json(request: Request) -> Response:
        return json_response(openapi())

    async def not_found_or_method(request: Request, exc: HTTPException) -> Response:
        message = (
            f"no such endpoint {request.method} {request.url.path}; see /openapi.json"
            if exc.status_code == 404
            else f"{request.method} is not allowed on {request.url.path}"
        )
        service.metrics.observe_request("unmatched", exc.status_code, 0.0)
        return json_response({"error": message}, exc.status_code, getattr(exc, "headers", None))

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await service.start()
        yield
        await service.stop()

    routes = [
        Route("/v1/encode", endpoint("encode", encode), methods=["POST"]),
        Route("/v1/decode", endpoint("decode", decode), methods=["POST"]),
        Route("/v1/sample", endpoint("sample", sample), methods=["POST"]),
        Route(
            "/v1/models/{rest:path}", endpoint("tf_serving", tf_serving), methods=["GET", "POST"]
        ),
        Route("/healthz", endpoint("healthz", healthz), methods=["GET"]),
        Route("/readyz", endpoint("readyz", readyz), methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    return Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: not_found_or_method}
    )
