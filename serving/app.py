"""The HTTP API: thin handlers that validate, delegate to the batchers, and answer.

Convenience endpoints (``/v1/encode``, ``/v1/sample``, ``/v1/decode``), the TF
Serving REST API (``/v1/models/...``), and the operator endpoints (health,
readiness, Prometheus metrics, OpenAPI). Every error is JSON ``{"error": ...}``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable

import numpy as np
import orjson

from serving import codec, tfserving
from serving.codec import JSON, NPY, PNG
from serving.errors import ApiError
from serving.http import Request, Response
from serving.openapi import openapi
from serving.png import encode_png, grid
from serving.service import Service

ENCODER, DECODER = "vae_encoder", "vae_decoder"
MAX_TEMPERATURE = 10.0
access_log = logging.getLogger("serving.access")
error_log = logging.getLogger("serving.error")
Handler = Callable[[Request], Awaitable[Response]]


def json_response(payload, status: int = 200, headers: dict | None = None) -> Response:
    return Response(status, codec.dump_json(payload), JSON, headers or {})


def error_response(error: ApiError) -> Response:
    return json_response({"error": error.message}, error.status, error.headers)


def refusal(status: int, message: str) -> Response:
    """What the HTTP layer answers by itself (body too large, malformed request...)."""
    return error_response(ApiError(status, message))


class App:
    """Routes requests to handlers; ``App.handle`` is what the HTTP server calls."""

    def __init__(self, service: Service):
        self.service = service
        self.routes: dict[str, dict[str, tuple[str, Handler]]] = {}
        self.prefixes: list[tuple[str, dict[str, tuple[str, Handler]]]] = []

    def route(self, path: str, name: str, handler: Handler, methods: tuple[str, ...]) -> None:
        """``path`` ending in ``/`` matches every path under it."""
        table = {method: (name, handler) for method in methods}
        if path.endswith("/"):
            self.prefixes.append((path, table))
        else:
            self.routes[path] = table

    async def handle(self, request: Request) -> Response:
        """Time, count and log each request; turn every failure into a JSON error."""
        started = time.perf_counter()
        table = self.routes.get(request.path)
        if table is None:
            table = next((t for p, t in self.prefixes if request.path.startswith(p)), None)
        route = "unmatched"
        try:
            if table is None:
                raise ApiError(404, f"no such endpoint {request.path}; see /openapi.json")
            if request.method not in table:
                raise ApiError(
                    405,
                    f"{request.method} is not allowed on {request.path}",
                    {"allow": ", ".join(table)},
                )
            route, handler = table[request.method]
            response = await handler(request)
        except ApiError as error:
            response = error_response(error)
        except Exception:  # a bug must not take the service down
            error_log.exception("unhandled error on %s", request.path)
            response = error_response(ApiError(500, "internal error; see the service log"))
        seconds = time.perf_counter() - started
        self.service.metrics.observe_request(route, response.status, seconds)
        if access_log.isEnabledFor(logging.INFO):
            line = {
                "ts": round(time.time(), 3),
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": response.status,
                "ms": round(seconds * 1000, 3),
                "client": request.client,
            }
            access_log.info(orjson.dumps(line).decode())
        return response


def build_app(service: Service) -> App:
    config = service.config

    def is_npy(request: Request) -> bool:
        return request.headers.get("content-type", "").split(";")[0].strip() == NPY

    def wants(request: Request) -> str:
        fmt = request.query.get("format")
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
        value = request.query.get("version")
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

    unseeded = np.random.default_rng()  # building a generator costs ~20 µs: one for all

    def rng(seed: int | None) -> np.random.Generator:
        return unseeded if seed is None else np.random.default_rng(seed)

    def json_object(request: Request) -> dict:
        payload = codec.parse_json(request.body)
        if not isinstance(payload, dict):
            raise ApiError(400, "request body must be a JSON object")
        return payload

    def images_response(request: Request, images: np.ndarray, extra: dict) -> Response:
        media = wants(request)
        if media == PNG:
            return Response(200, encode_png(grid(images)), PNG)
        if media == NPY:
            return Response(200, codec.dump_npy(images), NPY)
        return json_response({**extra, "images": images})

    def latent_response(request: Request, model, outputs: dict) -> Response:
        if wants(request) == NPY:
            names = list(outputs)
            stacked = np.stack([outputs[n] for n in names], axis=1)
            return Response(200, codec.dump_npy(stacked), NPY, {"x-outputs": ",".join(names)})
        return json_response({"model": model.name, "version": model.version, **outputs})

    # --- convenience API -------------------------------------------------------------
    async def encode(request: Request) -> Response:
        model = service.model(ENCODER, version_param(request))
        if is_npy(request):
            value, options = codec.parse_npy(request.body), dict(request.query)
        else:
            options = json_object(request)
            if "images" not in options:
                raise ApiError(400, 'missing "images": a list of 28x28 images in [0, 1]')
            value = options["images"]
        images = codec.read_batch(
            value, model.item_shape, "images", config.max_request_items, pixels=True
        )
        sample = bool_value(options.get("sample", False), "sample")
        seed = seed_value(options.get("seed"))
        outputs = await service.run(model, images)
        if sample:
            noise = rng(seed).standard_normal(outputs["z_mean"].shape)
            z = outputs["z_mean"] + np.exp(0.5 * outputs["z_log_var"]) * noise
            outputs = {**outputs, "z": z.astype(np.float32)}
        return latent_response(request, model, outputs)

    async def decode(request: Request) -> Response:
        model = service.model(DECODER, version_param(request))
        if is_npy(request):
            value = codec.parse_npy(request.body)
        else:
            payload = json_object(request)
            if "z" not in payload:
                raise ApiError(
                    400, f'missing "z": a list of latent vectors of size {model.latent_dim}'
                )
            value = payload["z"]
        z = codec.read_batch(value, model.item_shape, "z", config.max_request_items)
        outputs = await service.run(model, z)
        return images_response(
            request, outputs["probs"], {"model": model.name, "version": model.version}
        )

    async def sample(request: Request) -> Response:
        model = service.model(DECODER, version_param(request))
        payload = codec.parse_json(request.body) if request.body else {}
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
        z = (temperature * rng(seed).standard_normal((n, model.latent_dim))).astype(np.float32)
        outputs = await service.run(model, z)
        return images_response(
            request, outputs["probs"], {"model": model.name, "version": model.version, "z": z}
        )

    # --- TF Serving REST API ---------------------------------------------------------
    model_path = re.compile(
        r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?P<tail>/metadata|:predict)?$"
    )

    async def tf_serving(request: Request) -> Response:
        match = model_path.match(request.path[len("/v1/models/") :])
        if not match:
            raise ApiError(404, f"no such endpoint {request.path}; see /openapi.json")
        raw_version, tail = match["version"], match["tail"]
        if raw_version is not None and not raw_version.isdigit():
            raise ApiError(400, f"version must be a positive integer, got {raw_version!r}")
        version = None if raw_version is None else int(raw_version)
        model = service.model(match["name"], version)
        if tail == ":predict":
            if request.method != "POST":
                raise ApiError(405, f"{request.method} is not allowed on {request.path}; use POST")
            value, rows = tfserving.parse_predict(json_object(request), model)
            inputs = codec.read_batch(
                value,
                model.item_shape,
                model.input_name,
                config.max_request_items,
                pixels=model.name == ENCODER,
            )
            outputs = await service.run(model, inputs)
            return json_response(tfserving.format_predict(outputs, rows))
        if request.method != "GET":
            raise ApiError(405, f"{request.method} is not allowed on {request.path}; use GET")
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
        return Response(200, service.metrics.render(), "text/plain; version=0.0.4")

    async def openapi_json(request: Request) -> Response:
        return json_response(openapi())

    app = App(service)
    app.route("/v1/encode", "encode", encode, ("POST",))
    app.route("/v1/decode", "decode", decode, ("POST",))
    app.route("/v1/sample", "sample", sample, ("POST",))
    app.route("/v1/models/", "tf_serving", tf_serving, ("GET", "POST"))
    app.route("/healthz", "healthz", healthz, ("GET",))
    app.route("/readyz", "readyz", readyz, ("GET",))
    app.route("/metrics", "metrics", metrics, ("GET",))
    app.route("/openapi.json", "openapi", openapi_json, ("GET",))
    return app
