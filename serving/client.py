"""Two ways for another service to use the VAE, with the same methods.

- :class:`VaeClient` calls the HTTP service (binary ``.npy`` bodies: no JSON cost).
- :class:`LocalVae` runs the exported ONNX files in-process with onnxruntime,
  for services that embed the model. Neither needs TensorFlow.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from serving import sampling
from serving.sampling import prior, reparameterize
from vae_contract import (
    DECODER,
    ENCODER,
    IMAGE_SHAPE,
    IMAGES,
    MAX_BATCH_SIZE,
    NPY_MEDIA_TYPE,
    OUTPUTS_HEADER,
    PROBS,
    Z_LOG_VAR,
    Z_MEAN,
    Z,
    likelihood,
)

if TYPE_CHECKING:
    from vae_runtime import OnnxModel

NPY = NPY_MEDIA_TYPE
RECON = "reconstruction"
IMAGE_PIXELS = int(np.prod(IMAGE_SHAPE))


class ServiceError(RuntimeError):
    """The service refused a request; ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def _sampling(sample: bool, seed: int | None) -> dict[str, str]:
    """The query of an endpoint that may sample z (encode, reconstruct)."""
    params = {"sample": str(sample).lower()}
    if seed is not None:
        params["seed"] = str(seed)
    return params


class VaeClient:
    """``VaeClient("http://127.0.0.1:8080").encode(images)``; keeps one connection pool."""

    def __init__(self, base_url: str, timeout: float = 10.0):
        import httpx

        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VaeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _post(self, path: str, **kwargs) -> np.ndarray | dict:
        response = self._http.post(path, **kwargs)
        if response.status_code != 200:
            try:
                message = response.json()["error"]
            except Exception:
                message = response.text[:200]
            raise ServiceError(response.status_code, message)
        if response.headers.get("content-type", "").startswith(NPY):
            array = np.load(io.BytesIO(response.content), allow_pickle=False)
            names = response.headers.get(OUTPUTS_HEADER)
            if names:
                return {n: array[:, i] for i, n in enumerate(names.split(","))}
            return array
        return response.json()

    def encode(
        self, images: np.ndarray, sample: bool = False, seed: int | None = None
    ) -> dict[str, np.ndarray]:
        """images [N, 28, 28, 1] in [0, 1] -> z_mean, z_log_var (and z if ``sample``)."""
        headers = {"content-type": NPY, "accept": NPY}
        params = _sampling(sample, seed)
        return self._post("/v1/encode", content=_npy(images), params=params, headers=headers)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """z [N, latent_dim] -> Bernoulli means [N, 28, 28, 1]."""
        headers = {"content-type": NPY, "accept": NPY}
        return self._post("/v1/decode", content=_npy(z), headers=headers)

    def sample(self, n: int, seed: int | None = None, temperature: float = 1.0) -> np.ndarray:
        """n images decoded from z ~ N(0, temperature^2 I)."""
        body = {"n": n, "temperature": temperature}
        if seed is not None:
            body["seed"] = seed
        return self._post("/v1/sample", json=body, headers={"accept": NPY})

    def score(
        self, images: np.ndarray, k: int = likelihood.DEFAULT_K, seed: int | None = None
    ) -> dict[str, np.ndarray]:
        """Per image, in nats: ``log_likelihood``, ``elbo``, ``reconstruction``, ``kl``
        (see LocalVae.score), estimated by the service with ``k`` samples."""
        params = {"k": str(k)} if seed is None else {"k": str(k), "seed": str(seed)}
        headers = {"content-type": NPY, "accept": NPY}
        return self._post("/v1/score", content=_npy(images), params=params, headers=headers)

    def reconstruct(
        self, images: np.ndarray, sample: bool = False, seed: int | None = None
    ) -> dict[str, np.ndarray]:
        """``images`` (reconstructions), ``z`` and ``reconstruction`` (log p(x|z), nats)."""
        params, headers = _sampling(sample, seed), {"content-type": NPY}
        answer = self._post("/v1/reconstruct", content=_npy(images), params=params, headers=headers)
        return {name: np.asarray(answer[name], np.float32) for name in (IMAGES, Z, RECON)}

    def interpolate(
        self, a: np.ndarray, b: np.ndarray, steps: int = 8, spherical: bool = False
    ) -> dict[str, np.ndarray]:
        """Images decoded between two images (or two latent vectors), ends included."""
        ends = np.stack([np.asarray(a, np.float32), np.asarray(b, np.float32)])
        field = IMAGES if ends[0].size == IMAGE_PIXELS else Z
        body = {
            field: ends.tolist(),
            "steps": steps,
            "method": "spherical" if spherical else "linear",
        }
        answer = self._post("/v1/interpolate", json=body)
        return {name: np.asarray(answer[name], np.float32) for name in (Z, IMAGES)}

    def sample_png(self, n: int, seed: int | None = None, scale: int = 1) -> bytes:
        """A PNG grid of n samples, each pixel drawn as a ``scale`` × ``scale`` block."""
        body = {"n": n} if seed is None else {"n": n, "seed": seed}
        params = {"format": "png", "scale": str(scale)}
        response = self._http.post("/v1/sample", json=body, params=params)
        if response.status_code != 200:
            raise ServiceError(response.status_code, response.text[:200])
        return response.content


class LocalVae:
    """The exported encoder and decoder run in this process: ``LocalVae("artifacts/models")``.

    ``version`` defaults to the latest complete one; both files are verified against their
    manifests first by the service's own reader, :mod:`vae_runtime` (a
    ``vae_contract.ModelRepositoryError`` names what is wrong).
    """

    def __init__(self, repo: str | Path, version: int | None = None, threads: int = 1):
        from vae_runtime import load  # onnxruntime: not needed by VaeClient

        models = load(repo, version, threads)  # verified; ModelRepositoryError if unusable
        self._use(models[ENCODER], models[DECODER])

    @classmethod
    def from_models(cls, encoder: OnnxModel, decoder: OnnxModel) -> LocalVae:
        """Two networks already opened, e.g. by an export before it publishes them: what
        it records about them is then what LocalVae and the service compute."""
        vae = cls.__new__(cls)
        vae._use(encoder, decoder)
        return vae

    def _use(self, encoder: OnnxModel, decoder: OnnxModel) -> None:
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim = decoder.item_shape[0]

    def encode(
        self, images: np.ndarray, sample: bool = False, seed: int | None = None
    ) -> dict[str, np.ndarray]:
        outputs = self.encoder.run(np.asarray(images, np.float32).reshape(-1, *IMAGE_SHAPE))
        if sample:
            outputs[Z] = reparameterize(outputs, seed)
        return outputs

    def decode(self, z: np.ndarray) -> np.ndarray:
        return self.decoder.run(np.asarray(z, np.float32))[PROBS]

    def sample(self, n: int, seed: int | None = None, temperature: float = 1.0) -> np.ndarray:
        return self.decode(prior(n, self.latent_dim, temperature, seed))

    def score(
        self, images: np.ndarray, k: int = likelihood.DEFAULT_K, seed: int | None = None
    ) -> dict[str, np.ndarray]:
        """Per image, in nats: ``log_likelihood`` (the importance-weighted estimate of
        log p(x) with ``k`` samples), ``elbo``, ``reconstruction`` and ``kl``; the same
        figures as the service's /v1/score for the same seed."""
        if not 1 <= k <= likelihood.MAX_K:
            raise ValueError(f"k must be from 1 to {likelihood.MAX_K}, got {k}")
        x = np.asarray(images, np.float32).reshape(-1, *IMAGE_SHAPE)
        rng = sampling.rng(seed if seed is not None else sampling.fresh_seed())
        return likelihood.score_images(x, self._posterior, self._logits, k, rng)

    def _posterior(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self.encoder.run(x)
        return outputs[Z_MEAN], outputs[Z_LOG_VAR]

    def _logits(self, z: np.ndarray) -> np.ndarray:
        decoded = self.decoder.run(z, max_batch=MAX_BATCH_SIZE)  # faster in batches
        return likelihood.decoder_logits(decoded)

    def reconstruct(
        self, images: np.ndarray, sample: bool = False, seed: int | None = None
    ) -> dict[str, np.ndarray]:
        """``images``: the decoder's means at the posterior mean (or at a sampled z);
        ``z``: that z; ``reconstruction``: log p(x|z) of each input, in nats."""
        x = np.asarray(images, np.float32).reshape(-1, *IMAGE_SHAPE)
        z = self.encode(x, sample=sample, seed=seed)[Z if sample else Z_MEAN]
        decoded = self.decoder.run(np.asarray(z, np.float32))
        log_px_z = likelihood.bernoulli_log_prob(x, likelihood.decoder_logits(decoded))
        return {IMAGES: decoded[PROBS], Z: z, RECON: log_px_z}

    def interpolate(
        self, a: np.ndarray, b: np.ndarray, steps: int = 8, spherical: bool = False
    ) -> dict[str, np.ndarray]:
        """Images decoded along the path between two images' posterior means (or two
        latent vectors, when ``a`` and ``b`` have the latent size), ends included."""
        ends = [np.asarray(v, np.float32) for v in (a, b)]
        if ends[0].size != self.latent_dim:
            ends = list(self.encode(np.stack(ends))[Z_MEAN])
        z = likelihood.interpolate(ends[0], ends[1], steps, spherical).astype(np.float32)
        return {Z: z, IMAGES: self.decode(z)}
