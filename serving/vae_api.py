"""The VAE's own API: ``/v1/encode``, ``/v1/decode``, ``/v1/sample``.

JSON bodies, or a ``.npy`` array with ``Content-Type: application/x-npy`` (options
then go in the query string). Answers as JSON, ``.npy`` or PNG (see responses).
What a VAE is used for beyond these (scores, reconstructions, paths) is in
:mod:`serving.vae_operations`.
"""

from __future__ import annotations

import numpy as np

from serving import codec, json_batch, params, sampling
from serving.asgi import Request, Response, admits
from serving.errors import ApiError
from serving.responses import arrays_response, images_response, sends_npy
from serving.service import Service
from vae_contract import DECODER, ENCODER, IMAGES, PROBS, Z
from vae_runtime import OnnxModel

MAX_TEMPERATURE = 10.0


IMAGE_VALUES = codec.input_values(ENCODER, IMAGES)
LATENT_VALUES = codec.input_values(DECODER, Z)


def read_images(body: bytes, model: OnnxModel, max_items: int) -> tuple[np.ndarray, dict]:
    """A JSON ``/v1/encode`` body: the images [N, *item_shape] and the other fields
    (their values are checked as they are batched: ``IMAGE_VALUES``)."""
    if (fast := json_batch.read(body, IMAGES, model.item_shape)) is not None:
        value, options = fast
    else:
        options = codec.parse_json_object(body, codec.list_budget(model.item_shape, max_items))
        if IMAGES not in options:
            raise ApiError(400, f'missing "{IMAGES}": a list of 28x28 images in [0, 1]')
        value = options[IMAGES]
    return codec.read_batch(value, model.item_shape, IMAGES, max_items, values=False), options


def read_latents(body: bytes, model: OnnxModel, max_items: int) -> np.ndarray:
    """A JSON ``/v1/decode`` body: the latent vectors [N, latent_dim] (their values are
    checked as they are batched: ``LATENT_VALUES``)."""
    if (fast := json_batch.read(body, Z, model.item_shape)) is not None:
        value = fast[0]
    else:
        payload = codec.parse_json_object(body, codec.list_budget(model.item_shape, max_items))
        if Z not in payload:
            size = model.item_shape[0]
            raise ApiError(400, f'missing "{Z}": a list of latent vectors of size {size}')
        value = payload[Z]
    return codec.read_batch(value, model.item_shape, Z, max_items, values=False)


def routes(service: Service):
    config = service.config
    max_items = config.max_request_items

    @admits(ENCODER)
    async def encode(request: Request) -> Response:
        model = service.admit(ENCODER, params.version(request.query.get("version")))
        if sends_npy(request):
            array = codec.parse_npy(request.body)
            images = codec.read_batch(array, model.item_shape, IMAGES, max_items, values=False)
            options = request.query
        else:
            images, options = await service.offload.call(
                read_images, request.body, model, max_items
            )
        sample = params.flag(options.get("sample", False), "sample")
        seed = params.seed(options.get("seed"))
        outputs = await service.run(model, images, IMAGE_VALUES)
        if sample:
            outputs = {**outputs, Z: sampling.reparameterize(outputs, seed)}
        return arrays_response(request, {"model": model.name, "version": model.version}, outputs)

    @admits(DECODER)
    async def decode(request: Request) -> Response:
        model = service.admit(DECODER, params.version(request.query.get("version")))
        if sends_npy(request):
            array = codec.parse_npy(request.body)
            z = codec.read_batch(array, model.item_shape, Z, max_items, values=False)
        else:
            z = await service.offload.call(read_latents, request.body, model, max_items)
        outputs = await service.run(model, z, LATENT_VALUES)
        meta = {"model": model.name, "version": model.version}
        return images_response(request, outputs[PROBS], meta)

    @admits(DECODER)
    async def sample(request: Request) -> Response:
        model = service.admit(DECODER, params.version(request.query.get("version")))
        payload = codec.parse_json_object(request.body, 16) if request.body else {}
        n = params.positive_int(payload.get("n", 1), "n")
        if n > max_items:
            raise ApiError(413, f"n={n} is above the limit of {max_items}")
        temperature = payload.get("temperature", 1.0)
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0 < temperature <= MAX_TEMPERATURE
        ):
            raise ApiError(
                400,
                f"temperature must be a number in (0, {MAX_TEMPERATURE:g}], "
                f"got {params.describe(temperature)}",
            )
        seed = params.seed(payload.get("seed"))
        z = sampling.prior(n, model.latent_dim, temperature, seed)
        outputs = await service.run(model, z)
        meta = {"model": model.name, "version": model.version, Z: z}
        return images_response(request, outputs[PROBS], meta)

    return [
        ("/v1/encode", "encode", encode, ("POST",)),
        ("/v1/decode", "decode", decode, ("POST",)),
        ("/v1/sample", "sample", sample, ("POST",)),
    ]
