"""What a VAE is used for in production, over HTTP: scores, reconstructions, paths.

- ``POST /v1/score`` ``{"images": [...], "k": 100, "seed": 0}`` → ``{"version", "k",
  "seed", "log_likelihood": [N], "elbo": [N], "reconstruction": [N], "kl": [N]}``, in
  nats: the importance-weighted estimate of log p(x) with K samples, the ELBO, its
  reconstruction term E_q[log p(x|z)] and its KL. Without a seed one is drawn and
  returned, so that any answer can be replayed.
- ``GET /v1/score/reference`` → the test-set distribution of ``log_likelihood``
  recorded at export (see :mod:`vae_contract.score_reference`); 404 when there is none.
- ``POST /v1/reconstruct`` ``{"images": [...], "sample": false, "seed": null}`` →
  ``{"version", "images", "z", "reconstruction"}`` (log p(x|z) at the z used);
  ``?format=png`` puts each original above its reconstruction.
- ``POST /v1/interpolate`` ``{"images": [a, b]}`` or ``{"z": [za, zb]}``, ``"steps"``
  (2..64), ``"method": "linear" | "spherical"`` → ``{"version", "z", "images"}``, ends
  included; ``?format=png`` gives one strip.

Images come as JSON or ``.npy`` (options then in the query), as for ``/v1/encode``.
The K decoder passes of a group of images (``likelihood.score_groups``, the procedure
``LocalVae.score`` runs too) go to the decoder's batcher as one request, which slices it
among everyone else's requests.
"""

from __future__ import annotations

import asyncio

import numpy as np

from serving import codec, params, sampling
from serving.asgi import Request, Response, admits
from serving.errors import ApiError
from serving.png import encode_png, grid
from serving.responses import arrays_response, json_response, png_scale, sends_npy, wants
from serving.service import Service
from serving.vae_api import read_images
from vae_contract import DECODER, ENCODER, IMAGES, PROBS, Z_LOG_VAR, Z_MEAN, Z, likelihood
from vae_contract.score_reference import read_reference
from vae_runtime import OnnxModel

MAX_STEPS = 64
METHODS = ("linear", "spherical")
PNG_COLUMNS = 16  # a reconstruction PNG: 16 originals, their 16 reconstructions, ...


def pair(service: Service, request: Request) -> tuple[OnnxModel, OnnxModel]:
    """Encoder and decoder of one version (the latest unless ``?version=``): a version is
    published with both networks, so the decoder of the encoder's version exists."""
    encoder = service.admit(ENCODER, params.version(request.query.get("version")))
    return encoder, service.admit(DECODER, encoder.version)


def routes(service: Service):
    max_items = service.config.max_request_items
    max_rows = likelihood.MAX_SCORED_ROWS

    async def images_and_options(request: Request, encoder: OnnxModel):
        if sends_npy(request):
            array = codec.parse_npy(request.body)
            images = codec.read_batch(array, encoder.item_shape, IMAGES, max_items, pixels=True)
            return images, request.query
        return await service.offload.call(read_images, request.body, encoder, max_items)

    @admits(ENCODER)
    async def score(request: Request) -> Response:
        encoder, decoder = pair(service, request)
        images, options = await images_and_options(request, encoder)
        k = params.bounded_int(
            options.get("k", likelihood.DEFAULT_K), "k", 1, likelihood.MAX_K, True
        )
        if k * len(images) > max_rows:
            raise ApiError(
                413,
                f"k x images = {k} x {len(images)} is above the limit of {max_rows} decoder "
                "passes per request; send fewer images per request or a smaller k",
            )
        seed = params.seed(options.get("seed"))
        seed = sampling.fresh_seed() if seed is None else seed
        rng = np.random.default_rng(seed)
        posterior = await service.run(encoder, images)
        mean, log_var = posterior[Z_MEAN], posterior[Z_LOG_VAR]
        parts = []
        for rows, score_group in likelihood.score_groups(images, mean, log_var, k, rng):
            logits = likelihood.decoder_logits(await service.run(decoder, rows))
            # The numpy of a group grows with K x images: in a thread (numpy releases
            # the GIL), so that the event loop keeps serving others meanwhile.
            parts.append(await asyncio.to_thread(score_group, logits))
        figures = likelihood.joined(parts)
        meta = {"version": encoder.version, "k": k, "seed": seed}
        return arrays_response(request, meta, figures)

    async def reference(request: Request) -> Response:
        decoder = service.model(DECODER, params.version(request.query.get("version")))
        found = read_reference(decoder.path.parent)
        if found is None:
            raise ApiError(
                404,
                f"version {decoder.version} has no score reference: it was exported before "
                "references were recorded; export the run again",
            )
        return json_response({"version": decoder.version, **found})

    @admits(ENCODER)
    async def reconstruct(request: Request) -> Response:
        encoder, decoder = pair(service, request)
        media, scale = wants(request), png_scale(request)  # checked before any work
        images, options = await images_and_options(request, encoder)
        sample = params.flag(options.get("sample", False), "sample")
        seed = params.seed(options.get("seed"))
        posterior = await service.run(encoder, images)
        z = sampling.reparameterize(posterior, seed) if sample else posterior[Z_MEAN]
        decoded = await service.run(decoder, z)
        logits = np.asarray(likelihood.decoder_logits(decoded), np.float64)
        log_px_z = likelihood.bernoulli_log_prob(images.astype(np.float64), logits)
        outputs = np.clip(decoded[PROBS], 0.0, 1.0)  # float32's sigmoid can give 1.0000001
        if media == codec.PNG:
            return Response(200, encode_png(paired_rows(images, outputs, scale)), codec.PNG)
        if media == codec.NPY:
            return Response(200, codec.dump_npy(outputs), codec.NPY)
        meta = {"version": encoder.version, IMAGES: outputs, Z: z}
        return json_response({**meta, "reconstruction": log_px_z})

    @admits(ENCODER)
    async def interpolate(request: Request) -> Response:
        encoder, decoder = pair(service, request)
        media, scale = wants(request), png_scale(request)
        body = codec.parse_json_object(
            request.body, codec.list_budget(encoder.item_shape, 8)
        )  # 2 + room to say so
        steps = params.bounded_int(body.get("steps", 8), "steps", 2, MAX_STEPS)
        method = body.get("method", "linear")
        if method not in METHODS:
            raise ApiError(
                400, f"method must be one of {', '.join(METHODS)}, got {params.describe(method)}"
            )
        if (IMAGES in body) == (Z in body):
            raise ApiError(
                400,
                f'send either "{IMAGES}" (two images) or "{Z}" (two latent '
                "vectors) to interpolate between",
            )
        if IMAGES in body:
            images = codec.read_batch(body[IMAGES], encoder.item_shape, IMAGES, 8, pixels=True)
            ends = (await service.run(encoder, images))[Z_MEAN]
            what = "two images"
        else:
            ends = codec.read_batch(body[Z], decoder.item_shape, Z, 8)
            what = "two latent vectors"
        if len(ends) != 2:
            raise ApiError(400, f"interpolate needs {what}, got {len(ends)}")
        z = likelihood.interpolate(ends[0], ends[1], steps, method == "spherical")
        z = z.astype(np.float32)
        outputs = np.clip((await service.run(decoder, z))[PROBS], 0.0, 1.0)
        if media == codec.PNG:
            strip = grid(outputs, scale=scale, columns=steps)
            return Response(200, encode_png(strip), codec.PNG)
        if media == codec.NPY:
            return Response(200, codec.dump_npy(outputs), codec.NPY)
        return json_response({"version": encoder.version, Z: z, IMAGES: outputs})

    return [
        ("/v1/score", "score", score, ("POST",)),
        ("/v1/score/reference", "score_reference", reference, ("GET",)),
        ("/v1/reconstruct", "reconstruct", reconstruct, ("POST",)),
        ("/v1/interpolate", "interpolate", interpolate, ("POST",)),
    ]


def paired_rows(originals: np.ndarray, reconstructions: np.ndarray, scale: int) -> np.ndarray:
    """Rows of up to PNG_COLUMNS originals, each followed by the row of their reconstructions."""
    rows = []
    for start in range(0, len(originals), PNG_COLUMNS):
        rows += [
            originals[start : start + PNG_COLUMNS],
            reconstructions[start : start + PNG_COLUMNS],
        ]
    columns = min(len(originals), PNG_COLUMNS)
    blank = np.zeros((1, *originals.shape[1:]), originals.dtype)
    padded = [np.concatenate([r, *[blank] * (columns - len(r))]) for r in rows]
    return grid(np.concatenate(padded), scale=scale, columns=columns)
