"""The Open Inference Protocol (KServe v2), as Triton, KServe and MLServer speak it.

Endpoints: ``GET /v2``, ``/v2/health/live|ready``, ``GET /v2/models/{name}[/versions/{v}]``
(metadata) and ``.../ready``, ``POST .../infer``. Tensors are FP32, as JSON
(``data`` flat in row-major order, or nested) or with the binary tensor data
extension: the JSON header is the first ``Inference-Header-Content-Length`` bytes of
the body, and each tensor whose ``parameters.binary_data_size`` is set follows it,
raw little-endian, in the order of the inputs. Outputs come back binary when asked
(``parameters.binary_data`` per output, or ``binary_data_output`` for all).
Errors are ``{"error": "..."}`` with a 4xx, which tritonclient raises as its own
exception with our message.
"""

from __future__ import annotations

import importlib.metadata
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving import codec, params
from serving.asgi import ANY, Request, Response
from serving.errors import ApiError
from serving.responses import json_response
from serving.service import Service
from vae_runtime import OnnxModel

try:
    SERVER_VERSION = importlib.metadata.version("keras-vae")
except importlib.metadata.PackageNotFoundError:  # run from a source tree
    SERVER_VERSION = "unknown"

PREFIX = "/v2/models/"
HEADER_LENGTH = "inference-header-content-length"
DATATYPE = "FP32"
PLATFORM = "onnxruntime_onnx"
_MODEL_PATH = re.compile(
    r"^(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<tail>/ready|/infer)?$"
)
_EMPTY = Response(200, b"", "text/plain")


@dataclass
class InferRequest:
    inputs: np.ndarray
    outputs: list[str]
    binary: set[str]
    id: str | None


def _field(tensor: dict, key: str, kind: type, where: str):
    value = tensor.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ApiError(400, f'{where} needs "{key}" ({kind.__name__})')
    return value


def _parameters(owner: dict, where: str) -> dict:
    """``owner["parameters"]``: absent means none; anything but an object is a 400."""
    if "parameters" not in owner:
        return {}
    value = owner["parameters"]
    if not isinstance(value, dict):
        raise ApiError(400, f"{where} parameters must be an object")
    return value


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary part after it."""
    if header_length is None:
        return body, b""
    length = params.decimal(header_length)
    if length is None:
        raise ApiError(400, "Inference-Header-Content-Length must be a non-negative integer")
    if length > len(body):
        raise ApiError(
            400,
            f"Inference-Header-Content-Length {length} is larger than the body ({len(body)} bytes)",
        )
    return body[:length], body[length:]


def _tensor(tensor: Any, model: OnnxModel, binary: bytes, max_items: int) -> np.ndarray:
    if not isinstance(tensor, dict):
        raise ApiError(400, "each of inputs must be an object with name, shape, datatype")
    name = _field(tensor, "name", str, "an input")
    if name != model.input_name:
        raise ApiError(
            400, f"unknown input {name[:40]!r} for {model.name}; its input is {model.input_name!r}"
        )
    where = f"input {name!r}"
    datatype = _field(tensor, "datatype", str, where)
    if datatype != DATATYPE:
        raise ApiError(400, f"{where} has datatype {datatype[:20]!r}; {model.name} takes FP32")
    shape = _field(tensor, "shape", list, where)
    if not shape or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ApiError(400, f"{where} shape must be a list of non-negative integers")
    if len(shape) > 8:
        raise ApiError(400, f"{where} shape has {len(shape)} dimensions; expected 1 + item shape")
    if shape[0] > max_items:
        raise ApiError(413, f"{where} has {shape[0]} items, above the limit of {max_items}")
    expected = [-1, *model.item_shape]
    if tuple(shape[1:]) != model.item_shape:
        raise ApiError(400, f"{where} has shape {shape}; {model.name} takes {expected}")
    count = math.prod(shape)
    extra = _parameters(tensor, where)
    if "binary_data_size" in extra:
        size = extra["binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ApiError(400, f"{where} binary_data_size must be a non-negative integer")
        if size != len(binary):
            raise ApiError(
                400,
                f"{where} binary_data_size is {size} bytes but {len(binary)} bytes follow "
                "the JSON header",
            )
        if size != count * 4:
            raise ApiError(
                400,
                f"{where} binary_data_size is {size} bytes; "
                f"shape {shape} of FP32 needs {count * 4}",
            )
        array = np.frombuffer(binary, "<f4").reshape(shape)
    else:
        if binary:
            raise ApiError(
                400, f"{len(binary)} bytes follow the JSON header but no input has binary_data_size"
            )
        if "data" not in tensor:
            raise ApiError(400, f'{where} needs "data" or parameters.binary_data_size')
        array = codec.to_array(tensor["data"], where)
        if array.size != count:
            raise ApiError(
                400, f"{where} shape {shape} holds {count} values but data has {array.size}"
            )
        array = array.reshape(shape)
    if count == 0:
        raise ApiError(400, f"{where} is an empty batch; send at least one item")
    return np.ascontiguousarray(array, np.float32)  # its values: see input_values


def input_values(model: OnnxModel) -> codec.Values:
    """How an input tensor's values are checked, as it is batched."""
    return codec.input_values(model.name, f"input {model.input_name!r}")


def parse_infer(
    body: bytes, model: OnnxModel, header_length: str | None, max_items: int
) -> InferRequest:
    """An infer request's input tensor and what it asks back (``header_length``: the
    value of Inference-Header-Content-Length, if sent)."""
    header, binary = split_body(body, header_length)
    payload = codec.parse_json_object(header, codec.list_budget(model.item_shape, max_items))
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise ApiError(400, f'"inputs" must be a list of one tensor, {model.input_name!r}')
    array = _tensor(inputs[0], model, binary, max_items)
    options = _parameters(payload, "the request")
    binary_all = params.flag(options.get("binary_data_output", False), "binary_data_output")
    if "classification" in options:
        raise ApiError(400, "the classification extension is not supported; ask for raw outputs")
    requested = payload.get("outputs")  # absent or []: every output
    names, binary_names = list(model.output_names), set(model.output_names) if binary_all else set()
    if requested is not None and requested != []:
        if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
            raise ApiError(400, '"outputs" must be a list of objects with a "name"')
        names, binary_names = [], set()
        for output in requested:
            name = _field(output, "name", str, "an output")
            if name not in model.output_names:
                raise ApiError(
                    400,
                    f"unknown output {name[:40]!r} for {model.name}; "
                    f"outputs: {', '.join(model.output_names)}",
                )
            if name in names:
                raise ApiError(400, f"output {name!r} is asked for twice")
            extra = _parameters(output, f"output {name!r}")
            if "classification" in extra:
                raise ApiError(
                    400, "the classification extension is not supported; ask for raw outputs"
                )
            if params.flag(extra.get("binary_data", binary_all), "binary_data"):
                binary_names.add(name)
            names.append(name)
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ApiError(400, '"id" must be a string')
    return InferRequest(array, names, binary_names, request_id)


def format_infer(
    model: OnnxModel, parsed: InferRequest, outputs: dict[str, np.ndarray]
) -> Response:
    tensors, blobs = [], []
    for name in parsed.outputs:
        value = outputs[name]
        tensor = {"name": name, "datatype": DATATYPE, "shape": list(value.shape)}
        if name in parsed.binary:
            blob = np.ascontiguousarray(value, "<f4").tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = value.ravel()
        tensors.append(tensor)
    document = {"model_name": model.name, "model_version": str(model.version), "outputs": tensors}
    if parsed.id is not None:
        document["id"] = parsed.id
    header = codec.dump_json(document)
    if not blobs:
        return Response(200, header, codec.JSON)
    body = b"".join([header, *blobs])
    return Response(200, body, "application/octet-stream", {HEADER_LENGTH: str(len(header))})


def model_metadata(model: OnnxModel, versions: list[int]) -> dict[str, Any]:
    outputs = model.session.get_outputs()
    return {
        "name": model.name,
        "versions": [str(v) for v in sorted(versions)],
        "platform": PLATFORM,
        "inputs": [
            {"name": model.input_name, "datatype": DATATYPE, "shape": [-1, *model.item_shape]}
        ],
        "outputs": [
            {"name": o.name, "datatype": DATATYPE, "shape": [-1, *(int(d) for d in o.shape[1:])]}
            for o in outputs
        ],
    }


def routes(service: Service):
    max_items = service.config.max_request_items

    async def server_metadata(request: Request) -> Response:
        return json_response(
            {"name": "keras-vae", "version": SERVER_VERSION, "extensions": ["binary_tensor_data"]}
        )

    async def live(request: Request) -> Response:
        return _EMPTY

    async def ready(request: Request) -> Response:
        if not service.ready:
            raise ApiError(503, "models are still loading")
        return _EMPTY

    async def models(request: Request) -> Response:
        model, version, tail = params.model_path(service, _MODEL_PATH, PREFIX, request)
        if tail == "/infer":
            params.require(request, "POST")
            service.check_room(model)
            parsed = await service.offload.call(
                parse_infer, request.body, model, request.headers.get(HEADER_LENGTH), max_items
            )
            outputs = await service.run(model, parsed.inputs, input_values(model))
            return format_infer(model, parsed, outputs)
        params.require(request, "GET")
        if tail == "/ready":
            return await ready(request)
        versions = [model.version] if version is not None else list(service.models[model.name])
        return json_response(model_metadata(model, versions))

    return [
        ("/v2", "v2_server", server_metadata, ("GET",)),
        ("/v2/health/live", "v2_live", live, ("GET",)),
        ("/v2/health/ready", "v2_ready", ready, ("GET",)),
        (PREFIX, "v2_models", models, (ANY,)),
    ]
