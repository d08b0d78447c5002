"""What operators call: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import os

from serving import codec
from serving.asgi import Request, Response
from serving.openapi import openapi
from serving.responses import json_response
from serving.service import Service


def routes(service: Service):
    async def healthz(request: Request) -> Response:
        return json_response({"status": "alive"})

    async def readyz(request: Request) -> Response:
        if not service.ready:
            return json_response({"status": "starting"}, 503)
        return json_response({"status": "ready", "pid": os.getpid(), "models": service.describe()})

    async def metrics(request: Request) -> Response:
        return Response(200, service.metrics.render(), "text/plain; version=0.0.4")

    documents: dict[tuple, bytes] = {}  # one, for the versions being served

    async def openapi_json(request: Request) -> Response:
        # New versions may be published while the service runs (their numbers are in the
        # document); building it walks every route and model, so it is rebuilt only when
        # they change.
        served = tuple((name, tuple(versions)) for name, versions in service.models.items())
        if served not in documents:
            documents.clear()
            documents[served] = codec.dump_json(openapi(service))
        return Response(200, documents[served], codec.JSON)

    return [
        ("/healthz", "healthz", healthz, ("GET",)),
        ("/readyz", "readyz", readyz, ("GET",)),
        ("/metrics", "metrics", metrics, ("GET",)),
        ("/openapi.json", "openapi", openapi_json, ("GET",)),
    ]
