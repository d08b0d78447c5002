"""The TF Serving REST API's request and response shapes, so its clients work unchanged.

Row format:      {"instances": [x0, x1, ...]} or [{"images": x0}, ...] -> {"predictions": [...]}
Columnar format: {"inputs": X} or {"inputs": {"images": X}}           -> {"outputs": {...}}
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from serving import codec, params
from serving.asgi import ANY, Request, Response
from serving.errors import ApiError
from serving.responses import json_response
from serving.service import Service
from vae_contract import SIGNATURE
from vae_runtime import OnnxModel

PREFIX = "/v1/models/"
_MODEL_PATH = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?P<tail>/metadata|:predict)?$"
)


def parse_predict(payload: Any, model: OnnxModel) -> tuple[Any, bool]:
    """The raw input value and whether the request used the row (``instances``) format."""
    if not isinstance(payload, dict):
        raise ApiError(400, 'request must be a JSON object with "instances" or "inputs"')
    signature = payload.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise ApiError(
            400,
            f"signature {params.describe(signature)} not found; this model has {SIGNATURE!r}",
        )
    has_rows, has_columns = "instances" in payload, "inputs" in payload
    if has_rows == has_columns:
        raise ApiError(400, 'send exactly one of "instances" (row) or "inputs" (columnar)')
    name = model.input_name
    if has_rows:
        rows = payload["instances"]
        if not isinstance(rows, list):
            raise ApiError(400, '"instances" must be a list')
        if rows and all(isinstance(row, dict) for row in rows):
            if any(set(row) != {name} for row in rows):
                raise ApiError(400, f'each instance must have exactly the input "{name}"')
            rows = [row[name] for row in rows]
        return rows, True
    value = payload["inputs"]
    if isinstance(value, dict):
        if set(value) != {name}:
            raise ApiError(400, f'"inputs" must name exactly the input "{name}"')
        value = value[name]
    return value, False


def read_predict(body: bytes, model: OnnxModel, max_items: int) -> tuple[np.ndarray, bool]:
    """A predict body's batch, and whether it came in the row (``instances``) format
    (its values are checked as it is batched: :func:`input_values`)."""
    payload = codec.parse_json_object(body, codec.list_budget(model.item_shape, max_items))
    value, rows = parse_predict(payload, model)
    batch = codec.read_batch(value, model.item_shape, model.input_name, max_items, values=False)
    return batch, rows


def input_values(model: OnnxModel) -> codec.Values:
    return codec.input_values(model.name, model.input_name)


def format_predict(outputs: dict[str, np.ndarray], rows: bool) -> dict[str, Any]:
    if rows:
        names = list(outputs)
        count = len(outputs[names[0]])
        if len(names) == 1:
            return {"predictions": outputs[names[0]]}
        return {"predictions": [{n: outputs[n][i] for n in names} for i in range(count)]}
    if len(outputs) == 1:
        return {"outputs": next(iter(outputs.values()))}
    return {"outputs": outputs}


def version_status(versions: list[int]) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": str(version),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for version in sorted(versions, reverse=True)
        ]
    }


def _tensor_info(name: str, shape: list[int | None]) -> dict[str, Any]:
    return {
        "dtype": "DT_FLOAT",
        "tensor_shape": {
            "dim": [{"size": str(-1 if d is None else d), "name": ""} for d in shape],
            "unknown_rank": False,
        },
        "name": name,
    }


def metadata(model: OnnxModel) -> dict[str, Any]:
    """The GetModelMetadata response: the ``serving_default`` signature of the model."""
    outputs = {
        o.name: _tensor_info(o.name, [None, *(int(d) for d in o.shape[1:])])
        for o in model.session.get_outputs()
    }
    return {
        "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    SIGNATURE: {
                        "inputs": {
                            model.input_name: _tensor_info(
                                model.input_name, [None, *model.item_shape]
                            )
                        },
                        "outputs": outputs,
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            }
        },
    }


def routes(service: Service):
    config = service.config

    async def tf_serving(request: Request) -> Response:
        model, version, tail = params.model_path(service, _MODEL_PATH, PREFIX, request)
        if tail == ":predict":
            params.require(request, "POST")
            service.check_room(model)
            inputs, rows = await service.offload.call(
                read_predict, request.body, model, config.max_request_items
            )
            outputs = await service.run(model, inputs, input_values(model))
            return json_response(format_predict(outputs, rows))
        params.require(request, "GET")
        if tail == "/metadata":
            return json_response(metadata(model))
        versions = [model.version] if version is not None else list(service.models[model.name])
        return json_response(version_status(versions))

    return [(PREFIX, "tf_serving", tf_serving, (ANY,))]
