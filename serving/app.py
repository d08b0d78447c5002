"""The router: path and method to handler, timing, metrics, the access log, JSON errors.

The handlers live with their protocol: :mod:`serving.vae_api` (``/v1/encode`` ...),
:mod:`serving.vae_operations` (``/v1/score``, ``/v1/reconstruct``, ``/v1/interpolate``),
:mod:`serving.tfserving` (``/v1/models/...``), :mod:`serving.kserve` (``/v2/...``)
and :mod:`serving.operations` (health, metrics, OpenAPI). Each is decode → run → encode.
"""

from __future__ import annotations

import logging
import re
import time

import orjson

from serving import explorer, kserve, operations, tfserving, vae_api, vae_operations
from serving.asgi import ANY, Handler, Request, Response
from serving.errors import ApiError
from serving.responses import error_response
from serving.service import Service

access_log = logging.getLogger("serving.access")
error_log = logging.getLogger("serving.error")
Table = dict[str, tuple[str, Handler]]
# Inference on the latest version of a model named in the path: v2 infer, TF predict.
_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)/infer$|^/v1/models/([^/:]+):predict$")


class App:
    """Routes requests to handlers; ``App.handle`` is what the ASGI layer calls."""

    def __init__(self, service: Service):
        self.service = service
        self.routes: dict[str, Table] = {}
        self.prefixes: list[tuple[str, Table]] = []
        self.admits: dict[str, str] = {}  # exact path -> the network its handler runs

    def route(self, path: str, name: str, handler: Handler, methods: tuple[str, ...]) -> None:
        """``path`` ending in ``/`` matches every path under it (``/`` itself only itself)."""
        if (network := getattr(handler, "admits", None)) is not None:
            self.admits[path] = network
        table = {method: (name, handler) for method in methods}
        if path != "/" and path.endswith("/"):
            self.prefixes.append((path, table))
        else:
            self.routes[path] = table

    def refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        """What the ASGI layer answers before routing (body too large, too many requests)."""
        self.service.metrics.observe_request("refused", status, 0.0)
        return error_response(ApiError(status, message, headers))

    def shed(self, path: str, query: bytes) -> Response | None:
        """503 before the body is read when the request's model has a full queue.

        The handlers check the queue too, after routing; this is the same check made
        earlier, for the routes whose model is known from the path alone and the latest
        version (a ``version`` in the query goes to the handler, which resolves it and
        words its errors)."""
        network = self.admits.get(path)
        if network is None:
            match = _MODEL_PATH.match(path)
            if match is None:
                return None
            network = match[1] or match[2]
        if b"version=" in query or network not in self.service.models:
            return None
        try:
            self.service.check_room(self.service.model(network))
        except ApiError as error:
            return self.refuse(error.status, error.message, error.headers)
        return None

    def _table(self, path: str) -> Table | None:
        table = self.routes.get(path)
        if table is None:
            table = next((t for p, t in self.prefixes if path.startswith(p)), None)
        return table

    async def handle(self, request: Request) -> Response:
        """Time, count and log each request; turn every failure into a JSON error."""
        started = time.perf_counter()
        asked = request.method
        table = self._table(request.path)
        route = "unmatched"
        try:
            if table is None:
                raise ApiError(404, f"no such endpoint {request.path}; see /openapi.json")
            method = "GET" if request.method == "HEAD" else request.method  # no body sent
            # An ANY route's handler checks the method against the rest of the path.
            entry = table.get(method) or table.get(ANY)
            if entry is None:
                allowed = ", ".join([*table, "HEAD"] if "GET" in table else table)
                message = f"{request.method} is not allowed on {request.path}; use {allowed}"
                raise ApiError(405, message, {"allow": allowed})
            route, handler = entry
            request.method = method
            response = await handler(request)
        except ApiError as error:
            response = error_response(error)
        except RecursionError:
            response = error_response(ApiError(400, "request nested too deeply"))
        except Exception:  # a bug must not take the service down
            error_log.exception("unhandled error on %s", request.path)
            response = error_response(ApiError(500, "internal error; see the service log"))
        seconds = time.perf_counter() - started
        self.service.metrics.observe_request(route, response.status, seconds)
        if access_log.isEnabledFor(logging.INFO):
            line = {
                "ts": round(time.time(), 3),
                "method": asked,
                "path": request.path,
                "route": route,
                "status": response.status,
                "ms": round(seconds * 1000, 3),
                "client": request.client,
            }
            access_log.info(orjson.dumps(line).decode())
        return response


def build_app(service: Service) -> App:
    app = App(service)
    for module in (vae_api, vae_operations, tfserving, kserve, operations, explorer):
        for path, name, handler, methods in module.routes(service):
            app.route(path, name, handler, methods)
    return app
