"""The OpenAPI 3.1 document served at ``/openapi.json``, built from the loaded service.

It is built from this replica's models and limits rather than written as constants,
because what a request must look like depends on them: the latent size, the largest
batch, the model names and versions. Stated exactly, the document can be checked
against the server with ``schemathesis run --checks all`` (README, "Serve";
tests/test_openapi.py): requests its schemas allow must be accepted, requests they
forbid must be refused with a 4xx, and every answer must match its schema.

Where JSON Schema cannot state what the server checks, the schema is the narrower,
checkable statement and the description says the rest: the batch of a v2 tensor
(its data's length follows its shape) and the binary bodies (``.npy``, the v2 binary
tensor extension), whose framing OpenAPI cannot describe.
"""

from __future__ import annotations

import math
from itertools import permutations
from typing import TYPE_CHECKING, Any

from serving.codec import JSON, MAX_ABS_VALUE, NPY, PNG, item_forms
from serving.responses import MAX_SCALE
from serving.vae_api import MAX_TEMPERATURE
from serving.vae_operations import MAX_STEPS, METHODS
from vae_contract import (
    DECODER,
    ENCODER,
    IMAGE_SHAPE,
    IMAGES,
    PROBS,
    SIGNATURE,
    Z_LOG_VAR,
    Z_MEAN,
    Z,
)
from vae_contract.likelihood import DEFAULT_K, MAX_K, MAX_SCORED_ROWS

if TYPE_CHECKING:
    from serving.service import Service
    from vae_runtime import OnnxModel

Schema = dict[str, Any]

BINARY = "application/octet-stream"
STRING: Schema = {"type": "string"}
NUMBER: Schema = {"type": "number"}
PIXEL: Schema = {"type": "number", "minimum": 0, "maximum": 1}
# numpy rounds float64 to float32 to nearest, ties to even: below this bound a number is a
# finite float32; from it on it becomes infinity, which the service refuses with a 400.
LATENT: Schema = {"type": "number", "minimum": -MAX_ABS_VALUE, "maximum": MAX_ABS_VALUE}
FLAG: Schema = {
    "description": "true or false, or the strings true, false, 1, 0 in any case",
    "anyOf": [
        {"type": "boolean"},
        {"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[01])$"},
    ],
}
SEED: Schema = {
    "description": "seeds the noise; null or absent: fresh noise",
    "anyOf": [
        {"type": "null"},
        {"type": "integer", "minimum": 0, "maximum": 2**64 - 1},
        {"type": "string", "pattern": "^[0-9]{1,19}$"},
    ],
}
# The shape of a batch of images, as descriptions name it: [N, 28, 28, 1].
IMAGE_BATCH = f"[N, {', '.join(map(str, IMAGE_SHAPE))}]"
# An infer request's "outputs" of null or [] asks for every output, as if absent.
EVERY_OUTPUT: Schema = {"description": "every output", "enum": [None, []]}
FORMATS = ["json", "npy", "png"]


def _object(properties: Schema, required: tuple[str, ...] = (), **more: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **more}
    if required:
        schema["required"] = list(required)
    return schema


def _array(items: Schema, low: int = 0, high: int | None = None) -> Schema:
    """An array of ``low`` to ``high`` (None: any number of) items."""
    schema: Schema = {"type": "array", "items": items}
    if low:
        schema["minItems"] = low
    if high is not None:
        schema["maxItems"] = high
    return schema


def _nested(shape: tuple[int, ...], leaf: Schema) -> Schema:
    """Nested lists of exactly ``shape``."""
    for size in reversed(shape):
        leaf = _array(leaf, size, size)
    return leaf


def _binary(description: str, media: str = BINARY) -> Schema:
    return {"schema": {"type": "string", "contentMediaType": media}, "description": description}


def _ok(description: str, schema: Schema, binary: dict[str, Schema] | None = None) -> Schema:
    """A 200 answer: JSON matching ``schema``, or one of the ``binary`` media types."""
    return {"description": description, "content": {JSON: {"schema": schema}, **(binary or {})}}


def _named_columns(answer: Schema) -> Schema:
    """``answer`` with the header that names, in order, the columns of its .npy form."""
    answer["headers"] = {"X-Outputs": {"description": "with .npy", "schema": STRING}}
    return answer


def _decimal_up_to(high: int) -> str:
    """A pattern for the decimal strings of 1 to ``high``, a power of ten (an integer
    option sent in a query string)."""
    digits = len(str(high)) - 1
    assert high == 10**digits, high
    return f"^({high}|[1-9][0-9]{{0,{digits - 1}}})$"


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _error(description: str, retry: bool = False) -> Schema:
    response: Schema = {
        "description": description,
        "content": {JSON: {"schema": _ref("schemas", "Error")}},
    }
    if retry:
        retry_after = {"type": "string", "pattern": "^[0-9]+$"}
        response["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": retry_after}
        }
    return response


def _parameter(name: str, where: str, description: str, schema: Schema) -> Schema:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema,
    }


# Every request may get these from the HTTP edge (serving/asgi.py, serving/connection.py).
EDGE = {"408": "Timeout", "413": "TooLarge", "431": "HeadTooLarge", "503": "Unavailable"}
# Running a model adds these (a 413 then also means more items than the limit).
INFERENCE = {"400": "BadRequest", "404": "NotFound", **EDGE, "504": "Deadline"}
# A GET naming a model (and a version) adds these.
LOOKUP = {"400": "BadVersion", "404": "NotFound", **EDGE}


class _Builder:
    """The document of one service: its models (the latest version of each gives the
    shapes) and its limits."""

    def __init__(self, service: Service):
        config = service.config
        self.max_items = config.max_request_items
        self.versions = {name: sorted(v) for name, v in service.models.items() if v}
        self.latest: dict[str, OnnxModel] = {
            name: service.models[name][v[-1]] for name, v in self.versions.items()
        }
        self.schemas: dict[str, Schema] = {
            "Error": _object(
                {"error": STRING},
                ("error",),
                additionalProperties=False,
                description="every refusal: one sentence naming the bad value and the fix",
            )
        }
        self.responses: dict[str, Schema] = {
            "BadRequest": _error("malformed request; the message names the field"),
            "BadVersion": _error("a version that is not a decimal integer"),
            "NotFound": _error("unknown model or version"),
            "MethodNotAllowed": _error("a method the path does not take; Allow lists them")
            | {"headers": {"Allow": {"schema": STRING}}},
            "Timeout": _error(
                f"the request did not arrive whole within {config.request_timeout_s:g} s"
            ),
            "TooLarge": _error(
                f"a body above {config.max_body_bytes} bytes, or more than "
                f"{self.max_items} items in one request"
            ),
            "HeadTooLarge": _error(f"request line and headers above {config.max_head_bytes} bytes"),
            "Unavailable": _error(
                "too many connections or requests in progress, or the model's queue is full",
                retry=True,
            ),
            "Deadline": _error(f"no answer within {config.timeout_s:g} s"),
            "NotReady": _error(
                "models are still loading; or, with Retry-After, as Unavailable", retry=True
            ),
        }

    def ref(self, name: str, schema: Schema) -> Schema:
        """``schema`` as a named component, so that the operations sharing it stay short."""
        self.schemas.setdefault(name, schema)
        return _ref("schemas", name)

    # -- shapes --------------------------------------------------------------------

    @staticmethod
    def outputs(model: OnnxModel) -> dict[str, tuple[int, ...]]:
        return {o.name: tuple(int(d) for d in o.shape[1:]) for o in model.session.get_outputs()}

    @staticmethod
    def leaf(model: OnnxModel) -> Schema:
        """One input value: a pixel in [0, 1] for the encoder, a finite float32 for z."""
        return PIXEL if model.name == ENCODER else LATENT

    def batch(self, model: OnnxModel, pair: bool = False) -> Schema:
        """A request's batch, 1 to max_items items of one of the documented item forms
        (``pair``: exactly two, the ends of an interpolation)."""
        low, high = (2, 2) if pair else (1, self.max_items)
        shape = ", ".join(map(str, model.item_shape))
        bounded = f"values within ±{MAX_ABS_VALUE:g}"
        what = "pixel values in [0, 1]" if model.name == ENCODER else bounded
        forms = [
            _array(_nested(form, self.leaf(model)), low, high)
            for form in item_forms(model.item_shape)
        ]
        schema = forms[0] if len(forms) == 1 else {"anyOf": forms}
        count = "N = 2" if pair else f"1 <= N <= {self.max_items}"
        description = f"a batch [N, {shape}] of {what}, {count}"
        name = f"{model.name}.{model.input_name}{'.pair' if pair else ''}"
        return self.ref(name, {"description": description, **schema})

    # -- operations ----------------------------------------------------------------

    def operation(
        self,
        method: str,
        summary: str,
        ok: Schema,
        statuses: dict[str, str],
        parameters: list[Schema] | None = None,
        body: Schema | None = None,
        **more: Any,
    ) -> Schema:
        responses = {"200": ok, **{s: _ref("responses", r) for s, r in statuses.items()}}
        operation: Schema = {"summary": summary, **more, "responses": responses}
        if parameters:
            operation["parameters"] = parameters
        if body is not None:
            operation["requestBody"] = body
        return {method: operation}

    def get(self, summary: str, ok: Schema, parameters: list[Schema] | None = None) -> Schema:
        return self.operation("get", summary, ok, LOOKUP if parameters else EDGE, parameters)

    def name_parameter(self) -> Schema:
        names = {"type": "string", "enum": list(self.versions)}
        return _parameter("name", "path", "model name; another name: 404", names)

    def version_parameter(self, networks: list[str], where: str = "path") -> Schema:
        versions = sorted({v for n in networks for v in self.versions[n]})
        default = "" if where == "path" else " (default: the latest)"
        description = f"model version{default}; another number: 404"
        return _parameter("version", where, description, {"type": "integer", "enum": versions})

    def per_model(self, template: str, operation: Any) -> dict[str, Schema]:
        """``template`` ({model}, {versions}) for each model, with and without a version."""
        paths = {}
        for network, model in self.latest.items():
            unversioned = operation(model)
            versioned = {m: {**op} for m, op in unversioned.items()}
            for op in versioned.values():
                op["parameters"] = [self.version_parameter([network])]
            paths[template.format(model=network, versions="")] = unversioned
            paths[template.format(model=network, versions="/versions/{version}")] = versioned
        return paths

    # -- the VAE API ---------------------------------------------------------------

    def vae_post(
        self, summary: str, body: Schema, ok: Schema, network: str, npy: str = "", png: bool = False
    ) -> Schema:
        """A /v1 operation; ``npy`` describes the .npy body it also takes (none if empty);
        ``png``: it answers PNG grids, whose ``?scale=`` it then takes."""
        content = {JSON: {"schema": body}}
        if npy:
            content[NPY] = _binary(f"{npy}; never pickled objects", NPY)
        formats = {"type": "string", "enum": FORMATS}
        parameters = [
            self.version_parameter([network], "query"),
            _parameter("format", "query", "answer format, before the Accept header", formats),
        ]
        if png:
            scale = {"type": "integer", "minimum": 1, "maximum": MAX_SCALE}
            parameters.append(
                _parameter("scale", "query", "screen pixels per model pixel of a PNG", scale)
            )
        # A body is required unless every field of it is optional (/v1/sample).
        request = {"required": "required" in body, "content": content}
        return self.operation("post", summary, ok, INFERENCE, parameters, request)

    def vae_api(self) -> dict[str, Schema]:
        paths: dict[str, Schema] = {}
        meta = {"model": STRING, "version": {"type": "integer"}}
        if ENCODER in self.latest:
            encoder = self.latest[ENCODER]
            latent = _array(_nested((encoder.latent_dim,), NUMBER), 1)
            names = tuple(self.outputs(encoder))
            answer = _object(
                {**meta, **dict.fromkeys(names, latent), Z: latent}, ("model", "version", *names)
            )
            ok = _named_columns(
                _ok(
                    "the posterior of each image (and z if sample); as .npy (Accept or ?format="
                    "npy) one [N, k, latent] array, its k outputs named in order by X-Outputs",
                    answer,
                    {NPY: _binary(".npy float32 [N, k, latent]", NPY)},
                )
            )
            body = _object({IMAGES: self.batch(encoder), "sample": FLAG, "seed": SEED}, (IMAGES,))
            paths["/v1/encode"] = self.vae_post(
                f"Encode images into the latent posterior ({Z_MEAN}, {Z_LOG_VAR}), "
                "optionally sample z",
                body,
                ok,
                ENCODER,
                f"a .npy array {IMAGE_BATCH} (sample and seed then go in the query string)",
            )
        if DECODER in self.latest:
            decoder = self.latest[DECODER]
            images = _array(_nested(self.outputs(decoder)[PROBS], PIXEL), 1)
            binary = {
                NPY: _binary(f".npy float32 {IMAGE_BATCH}", NPY),
                PNG: _binary("a grey-scale PNG grid of the images", PNG),
            }
            answer = _object({**meta, IMAGES: images}, ("model", "version", IMAGES))
            paths["/v1/decode"] = self.vae_post(
                "Decode latent vectors into Bernoulli means",
                _object({Z: self.batch(decoder)}, (Z,)),
                _ok("the images; .npy or a PNG grid with Accept or ?format=", answer, binary),
                DECODER,
                "a .npy array [N, latent]",
                png=True,
            )
            z = _array(_nested((decoder.latent_dim,), NUMBER), 1)
            answer = _object({**meta, IMAGES: images, Z: z}, ("model", "version", IMAGES, Z))
            temperature = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TEMPERATURE}
            options = {
                "n": {"type": "integer", "minimum": 1, "maximum": self.max_items},
                "seed": SEED,
                "temperature": temperature,
            }
            paths["/v1/sample"] = self.vae_post(
                "Draw z ~ N(0, T^2 I) and decode it (an empty body takes every default)",
                _object(options),
                _ok(
                    "the images and their z; .npy or a PNG grid with Accept or ?format=",
                    answer,
                    binary,
                ),
                DECODER,
                png=True,
            )
        return paths

    def vae_operations(self) -> dict[str, Schema]:
        """/v1/score, /v1/score/reference, /v1/reconstruct, /v1/interpolate: both networks."""
        if not {ENCODER, DECODER} <= set(self.latest):
            return {}
        encoder, decoder = self.latest[ENCODER], self.latest[DECODER]
        version = {"version": {"type": "integer"}}
        numbers = _array(NUMBER, 1)
        latent = _array(_nested((decoder.latent_dim,), NUMBER), 1)
        images = _array(_nested(self.outputs(decoder)[PROBS], PIXEL), 1)
        npy_images = f"a .npy array {IMAGE_BATCH} (the options then go in the query string)"
        binary = {
            NPY: _binary(f".npy float32 {IMAGE_BATCH}", NPY),
            PNG: _binary("a grey-scale PNG", PNG),
        }
        paths: dict[str, Schema] = {}
        k = {
            "description": f"importance samples per image (default {DEFAULT_K})",
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_K},
                {"type": "string", "pattern": _decimal_up_to(MAX_K)},
            ],
        }
        figures = ("log_likelihood", "elbo", "reconstruction", "kl")
        answer = _object(
            {
                **version,
                "k": {"type": "integer"},
                "seed": {"type": "integer"},
                **dict.fromkeys(figures, numbers),
            },
            ("version", "k", "seed", *figures),
        )
        ok = _named_columns(
            _ok(
                "per image, in nats: the importance-weighted estimate of log p(x), the ELBO, its "
                "reconstruction term E_q[log p(x|z)] and its KL; the seed used (drawn if none "
                "was given). As .npy: one [N, 4] array, its columns named in order by X-Outputs",
                answer,
                {NPY: _binary(".npy float64 [N, 4]", NPY)},
            )
        )
        body = _object({IMAGES: self.batch(encoder), "k": k, "seed": SEED}, (IMAGES,))
        paths["/v1/score"] = self.vae_post(
            f"Score images by likelihood (K x N above {MAX_SCORED_ROWS} is a 413)",
            body,
            ok,
            ENCODER,
            npy_images,
        )
        histogram = _object(
            {
                **version,
                "dataset": STRING,
                "images": {"type": "integer"},
                "k": {"type": "integer"},
                "seed": {"type": "integer"},
                "bin_edges": numbers,
                "counts": _array({"type": "integer"}, 1),
                "mean": NUMBER,
                "quantiles": {"type": "object", "additionalProperties": NUMBER},
            },
            ("version", "bin_edges", "counts", "mean", "quantiles"),
        )
        paths["/v1/score/reference"] = self.get(
            "the test set's log_likelihood histogram recorded at export (404: none recorded)",
            _ok("the reference distribution", histogram),
            [self.version_parameter([DECODER], "query")],
        )
        answer = _object(
            {**version, IMAGES: images, Z: latent, "reconstruction": numbers},
            ("version", IMAGES, Z, "reconstruction"),
        )
        body = _object({IMAGES: self.batch(encoder), "sample": FLAG, "seed": SEED}, (IMAGES,))
        paths["/v1/reconstruct"] = self.vae_post(
            "Reconstruct images: the decoder's means at the posterior mean (or a sampled z), "
            "with log p(x|z) of each",
            body,
            _ok("as JSON; .npy: the reconstructions; PNG: originals above them", answer, binary),
            ENCODER,
            npy_images,
            png=True,
        )
        options = {
            "steps": {"type": "integer", "minimum": 2, "maximum": MAX_STEPS},
            "method": {"enum": list(METHODS)},
        }
        ends = {
            "oneOf": [
                _object({IMAGES: self.batch(encoder, pair=True), **options}, (IMAGES,)),
                _object({Z: self.batch(decoder, pair=True), **options}, (Z,)),
            ]
        }
        answer = _object({**version, Z: latent, IMAGES: images}, ("version", Z, IMAGES))
        paths["/v1/interpolate"] = self.vae_post(
            "Decode the path between two images (their posterior means) or two latent vectors",
            ends,
            _ok("the images along the path, ends included; PNG: one strip", answer, binary),
            ENCODER,
            png=True,
        )
        return paths

    # -- TF Serving REST -----------------------------------------------------------

    def tf_serving(self) -> dict[str, Schema]:
        entry = _object(
            {"version": STRING, "state": {"enum": ["AVAILABLE"]}, "status": {"type": "object"}},
            ("version", "state", "status"),
        )
        status = self.ref(
            "TfServingStatus",
            _object({"model_version_status": _array(entry, 1)}, ("model_version_status",)),
        )
        spec = _object({"name": STRING, "version": STRING}, ("name", "version"))
        metadata = self.ref(
            "TfServingMetadata",
            _object(
                {"model_spec": spec, "metadata": _object({}, ("signature_def",))},
                ("model_spec", "metadata"),
            ),
        )
        name = [self.name_parameter()]
        versioned = [*name, self.version_parameter(list(self.versions))]
        signature = _ok(f"the {SIGNATURE} signature", metadata)
        return {
            "/v1/models/{name}": self.get(
                "TF Serving: version status", _ok("every version", status), name
            ),
            "/v1/models/{name}/versions/{version}": self.get(
                "TF Serving: one version's status", _ok("that version", status), versioned
            ),
            "/v1/models/{name}/metadata": self.get(
                "TF Serving: signature metadata", signature, name
            ),
            "/v1/models/{name}/versions/{version}/metadata": self.get(
                "TF Serving: one version's signature metadata", signature, versioned
            ),
            **self.per_model("/v1/models/{model}{versions}:predict", self.predict),
        }

    def predict(self, model: OnnxModel) -> Schema:
        batch, leaf = self.batch(model), self.leaf(model)
        name = model.input_name
        # Rows are items, or {"<input>": item} objects, never a mix.
        named = [
            _array(
                _object({name: _nested(form, leaf)}, (name,), additionalProperties=False),
                1,
                self.max_items,
            )
            for form in item_forms(model.item_shape)
        ]
        columns = {"anyOf": [batch, _object({name: batch}, (name,), additionalProperties=False)]}
        request = _object(
            {
                "signature_name": {"enum": [SIGNATURE]},
                "instances": {"anyOf": [batch, *named]},
                "inputs": columns,
            },
            description='exactly one of "instances" (row format) or "inputs" (columnar)',
            oneOf=[{"required": ["instances"]}, {"required": ["inputs"]}],
        )
        outputs, value = self.outputs(model), NUMBER
        if len(outputs) == 1:
            predictions = outputs_value = _array(_nested(next(iter(outputs.values())), value), 1)
        else:
            row = _object({n: _nested(s, value) for n, s in outputs.items()}, tuple(outputs))
            predictions = _array(row, 1)
            outputs_value = _object(
                {n: _array(_nested(s, value), 1) for n, s in outputs.items()}, tuple(outputs)
            )
        answer = _object(
            {"predictions": predictions, "outputs": outputs_value},
            oneOf=[{"required": ["predictions"]}, {"required": ["outputs"]}],
        )
        return self.operation(
            "post",
            f"TF Serving REST predict on {model.name}",
            _ok(
                "predictions (row format) or outputs (columnar)",
                self.ref(f"{model.name}.PredictResponse", answer),
            ),
            INFERENCE,
            body={
                "required": True,
                "content": {JSON: {"schema": self.ref(f"{model.name}.PredictRequest", request)}},
            },
        )

    # -- Open Inference Protocol ---------------------------------------------------

    def kserve(self) -> dict[str, Schema]:
        empty = {"description": "yes", "content": {"text/plain": {"schema": STRING}}}
        tensor = _object(
            {"name": STRING, "datatype": STRING, "shape": _array({"type": "integer"})},
            ("name", "datatype", "shape"),
        )
        metadata = self.ref(
            "V2ModelMetadata",
            _object(
                {
                    "name": STRING,
                    "versions": _array(STRING),
                    "platform": STRING,
                    "inputs": _array(tensor),
                    "outputs": _array(tensor),
                },
                ("name", "versions", "platform", "inputs", "outputs"),
            ),
        )
        server = _object(
            {"name": STRING, "version": STRING, "extensions": _array(STRING)},
            ("name", "version", "extensions"),
        )
        name = [self.name_parameter()]
        versioned = [*name, self.version_parameter(list(self.versions))]

        def ready(summary: str, parameters: list[Schema] | None = None) -> Schema:
            operation = self.get(summary, empty, parameters)
            operation["get"]["responses"]["503"] = _ref("responses", "NotReady")
            return operation

        return {
            "/v2": self.get(
                "Open Inference Protocol: server metadata", _ok("name, version, extensions", server)
            ),
            "/v2/health/live": self.get("Open Inference Protocol: liveness", empty),
            "/v2/health/ready": ready("Open Inference Protocol: readiness"),
            "/v2/models/{name}": self.get(
                "Open Inference Protocol: model metadata",
                _ok("inputs, outputs, versions", metadata),
                name,
            ),
            "/v2/models/{name}/versions/{version}": self.get(
                "Open Inference Protocol: one version's metadata",
                _ok("inputs, outputs", metadata),
                versioned,
            ),
            "/v2/models/{name}/ready": ready("Open Inference Protocol: model readiness", name),
            "/v2/models/{name}/versions/{version}/ready": ready(
                "Open Inference Protocol: one version's readiness", versioned
            ),
            **self.per_model("/v2/models/{model}{versions}/infer", self.infer),
        }

    def infer(self, model: OnnxModel) -> Schema:
        shape = (1, *model.item_shape)
        count, leaf = math.prod(shape), self.leaf(model)
        item = ", ".join(map(str, model.item_shape))
        parameters = _object({}, description="binary_data_size: only with the binary extension")
        tensor = _object(
            {
                "name": {"enum": [model.input_name]},
                "shape": {"const": list(shape)},
                "datatype": {"enum": ["FP32"]},
                "data": {"anyOf": [_array(leaf, count, count), _nested(shape, leaf)]},
                "parameters": parameters,
            },
            ("name", "shape", "datatype", "data"),
            description=(
                f"shape [N, {item}] with 1 <= N <= {self.max_items}, and data its "
                f"N x {count // shape[0]} values, flat in row-major order or nested. The schema "
                "shows N = 1: JSON Schema cannot tie the length of data to shape."
            ),
        )
        outputs = list(self.outputs(model))
        no_classification = {"not": {"required": ["classification"]}}
        output_parameters = _object({"binary_data": FLAG}, **no_classification)
        output = {
            n: _object({"name": {"enum": [n]}, "parameters": output_parameters}, ("name",))
            for n in outputs
        }
        # Each output at most once, in any order: every ordered subset, spelled out.
        asked = [
            {"type": "array", "prefixItems": [output[n] for n in subset], "items": False}
            for k in range(1, len(outputs) + 1)
            for subset in permutations(outputs, k)
        ]
        request = _object(
            {
                "id": {"type": ["string", "null"]},
                "inputs": {"type": "array", "prefixItems": [tensor], "minItems": 1, "items": False},
                "outputs": {
                    "description": "absent or empty: every output",
                    "anyOf": [*asked, EVERY_OUTPUT],
                },
                "parameters": _object({"binary_data_output": FLAG}, **no_classification),
            },
            ("inputs",),
        )
        answer_tensor = _object(
            {
                "name": {"enum": outputs},
                "datatype": {"enum": ["FP32"]},
                "shape": _array({"type": "integer", "minimum": 0}),
                "data": _array(NUMBER),
                "parameters": {"type": "object"},
            },
            ("name", "datatype", "shape"),
        )
        answer = _object(
            {
                "model_name": STRING,
                "model_version": STRING,
                "id": STRING,
                "outputs": _array(answer_tensor, 1),
            },
            ("model_name", "model_version", "outputs"),
        )
        ok = _ok(
            "the outputs; with binary outputs asked for, application/octet-stream: the JSON "
            "header (its length in Inference-Header-Content-Length), then each binary "
            "output's raw little-endian FP32 bytes",
            self.ref(f"{model.name}.InferResponse", answer),
            {BINARY: _binary("the JSON header, then the binary outputs")},
        )
        length = {"type": "string", "pattern": "^[0-9]+$"}
        ok["headers"] = {
            "Inference-Header-Content-Length": {
                "description": "with binary outputs",
                "schema": length,
            }
        }
        return self.operation(
            "post",
            f"Open Inference Protocol inference on {model.name}",
            ok,
            INFERENCE,
            body={
                "required": True,
                "content": {JSON: {"schema": self.ref(f"{model.name}.InferRequest", request)}},
            },
            description=(
                "JSON tensors. The binary tensor data extension is accepted too but not in the "
                "schema, which cannot state its framing: the body is the JSON header (the input "
                "with parameters.binary_data_size instead of data) followed by the raw "
                "little-endian FP32 tensor, and Inference-Header-Content-Length gives the "
                "header's length."
            ),
        )

    # -- operators -------------------------------------------------------------------

    def operators(self) -> dict[str, Schema]:
        ready = _object(
            {
                "status": {"enum": ["ready"]},
                "pid": {"type": "integer"},
                "models": {"type": "object"},
            },
            ("status",),
        )
        readyz = self.get(
            "readiness: models loaded and warmed up", _ok("ready, with the models", ready)
        )
        starting = _object({"status": {"enum": ["starting"]}}, ("status",))
        unavailable = self.responses["Unavailable"]
        readyz["get"]["responses"]["503"] = {
            "description": 'starting: {"status": "starting"}; or, as Unavailable, an error',
            "content": {JSON: {"schema": {"anyOf": [starting, _ref("schemas", "Error")]}}},
            "headers": unavailable["headers"],
        }
        prometheus = {
            "description": "Prometheus text format 0.0.4",
            "content": {"text/plain": {"schema": STRING}},
        }
        return {
            "/healthz": self.get(
                "liveness", _ok("alive", _object({"status": {"enum": ["alive"]}}, ("status",)))
            ),
            "/readyz": readyz,
            "/metrics": self.get("Prometheus metrics", prometheus),
            "/openapi.json": self.get(
                "this document", _ok("OpenAPI 3.1", _object({}, ("openapi",)))
            ),
        }

    def document(self) -> Schema:
        paths = {
            **self.vae_api(),
            **self.vae_operations(),
            **self.tf_serving(),
            **self.kserve(),
            **self.operators(),
        }
        return {
            "openapi": "3.1.0",
            "info": {
                "title": "keras-vae serving",
                "version": "1",
                "description": (
                    "Every GET also answers HEAD, without a body. Any other method on a path "
                    "gets 405 with an Allow header listing the path's methods "
                    "(components/responses/MethodNotAllowed). Every refusal is JSON "
                    '{"error": "..."}.'
                ),
            },
            "paths": paths,
            "components": {"schemas": self.schemas, "responses": self.responses},
        }


def openapi(service: Service) -> dict[str, Any]:
    """The OpenAPI document of ``service``: its models, versions, shapes and limits."""
    return _Builder(service).document()
