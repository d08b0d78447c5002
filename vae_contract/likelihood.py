"""What a score means: the likelihood maths of the Bernoulli VAE, in numpy only.

Evaluation (:mod:`keras_vae.iwae`), the service's ``/v1/score`` and ``/v1/reconstruct``,
and :class:`serving.client.LocalVae` all compute their figures here, so a score from
the service and ``make evaluate`` measure the same thing, with the same noise for a seed.

    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K,  z_k ~ q(z|x)

(Burda et al., 2016). It is a lower bound whose expectation rises to log p(x) as K
grows; K = 1 is the ELBO. Every figure is in nats, per image.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator

import numpy as np

from vae_contract import LOGITS, MAX_REQUEST_ITEMS, PROBS

LOG_2PI = math.log(2.0 * math.pi)


def bernoulli_log_prob(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """log p(x|z): the sum over pixels of x*l - softplus(l), per leading row.

    Written with the decoder's logits, not its probabilities, so that it stays finite
    for any logit (log(sigmoid) underflows to -inf near a saturated pixel)."""
    values = x * logits - np.logaddexp(0.0, logits)
    return values.reshape(values.shape[0], -1).sum(axis=1)


def log_normal(z: np.ndarray, mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """log N(z; mean, diag(exp(log_var))), summed over the last axis."""
    return -0.5 * np.sum(LOG_2PI + log_var + (z - mean) ** 2 / np.exp(log_var), axis=-1)


def gaussian_kl(mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """KL(q(z|x) || N(0, I)) in closed form, per row."""
    return 0.5 * np.sum(np.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)


def posterior_samples(
    mean: np.ndarray, log_var: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """z_k ~ q(z|x): [k, B, latent], drawn as one block of noise [k, B, latent]."""
    eps = rng.standard_normal((k, *mean.shape))
    return mean + np.exp(0.5 * log_var) * eps


def log_weights(
    x: np.ndarray,
    z: np.ndarray,
    mean: np.ndarray,
    log_var: np.ndarray,
    output: np.ndarray,
    log_likelihood: Callable[[np.ndarray, np.ndarray], np.ndarray] = bernoulli_log_prob,
) -> tuple[np.ndarray, np.ndarray]:
    """log w [B, K] and log p(x|z_k) [B, K], for z [K, B, latent] decoded to ``output``
    [K*B, ...] (the logits, for the Bernoulli decoder)."""
    k, batch = z.shape[:2]
    repeated = np.broadcast_to(x, (k, *x.shape)).reshape(k * batch, *x.shape[1:])
    log_px_z = log_likelihood(repeated, output).reshape(k, batch)
    log_pz = log_normal(z, 0.0, np.zeros_like(z))
    log_qz = log_normal(z, mean, log_var)
    return (log_px_z + log_pz - log_qz).T, log_px_z.T


def iwae_bound(weights: np.ndarray) -> np.ndarray:
    """logsumexp over K minus log K, per example, computed stably."""
    top = weights.max(axis=1, keepdims=True)
    return top[:, 0] + np.log(np.mean(np.exp(weights - top), axis=1))


def scores(
    x: np.ndarray, z: np.ndarray, mean: np.ndarray, log_var: np.ndarray, logits: np.ndarray
) -> dict[str, np.ndarray]:
    """Per image: the IWAE estimate of log p(x), and the ELBO as reconstruction - KL.

    ``reconstruction`` is E_q[log p(x|z)] over the same K samples; the KL is the
    closed form, as in training, so ``elbo`` is the figure ``make train`` reports."""
    x, z = np.asarray(x, np.float64), np.asarray(z, np.float64)
    mean, log_var = np.asarray(mean, np.float64), np.asarray(log_var, np.float64)
    weights, log_px_z = log_weights(x, z, mean, log_var, np.asarray(logits, np.float64))
    reconstruction = log_px_z.mean(axis=1)
    kl = gaussian_kl(mean, log_var)
    return {
        "log_likelihood": iwae_bound(weights),
        "elbo": reconstruction - kl,
        "reconstruction": reconstruction,
        "kl": kl,
    }


def interpolate(a: np.ndarray, b: np.ndarray, steps: int, spherical: bool) -> np.ndarray:
    """``steps`` points from a to b, ends included: straight, or along the great circle
    (spherical: keeps the norm typical of Gaussian samples, where a straight path
    between two such points dips towards the origin, an unlikely region)."""
    t = np.linspace(0.0, 1.0, steps)[:, None]
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if spherical:
        cos = np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
        omega = math.acos(float(np.clip(cos, -1.0, 1.0)))
        if omega > 1e-6:
            return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / math.sin(omega)
    return (1 - t) * a + t * b


# K, the importance samples per image: the default of /v1/score and LocalVae.score; the
# K of the headline evaluation (`make evaluate --full`), also the most a caller may ask for.
DEFAULT_K = 100
HEADLINE_K = 1000
MAX_K = HEADLINE_K
# K x images of one /v1/score request: K=100 on the largest batch, or K=1000 on 102 images.
MAX_SCORED_ROWS = MAX_REQUEST_ITEMS * DEFAULT_K
# Decoder rows per pass when scoring: bounds memory (4,096 x 784 logits in float64 is
# 26 MB), whatever the number of images and K.
ROWS_PER_PASS = 4096


def image_groups(n: int, k: int) -> list[slice]:
    """The images scored in one pass: as many as keep K x images <= ROWS_PER_PASS."""
    size = max(1, ROWS_PER_PASS // k)
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


Scorer = Callable[[np.ndarray], dict[str, np.ndarray]]


def score_groups(
    x: np.ndarray, mean: np.ndarray, log_var: np.ndarray, k: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, Scorer]]:
    """The scoring of many images, a group at a time (:func:`image_groups`), without the
    decoder: for each group, the rows to decode (its K posterior samples, float32
    [K * images, latent]) and the function that gives the group's :func:`scores` from
    the decoder's logits on them.

    The decoder is left to the caller, so that one procedure serves a caller that runs
    it in-process (:func:`score_images`) and one that awaits it (the service's
    ``/v1/score``). The noise is drawn from ``rng`` as each group is taken, so for a seed
    both get the same samples.
    """
    for group in image_groups(len(x), k):
        z = posterior_samples(mean[group], log_var[group], k, rng)
        rows = z.reshape(-1, z.shape[-1]).astype(np.float32)
        yield rows, functools.partial(scores, x[group], z, mean[group], log_var[group])


def joined(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The groups' :func:`scores` as one array per figure, in the images' order."""
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def score_images(
    x: np.ndarray,
    encode: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    decode: Callable[[np.ndarray], np.ndarray],
    k: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """:func:`scores` of many images, with networks given as functions: ``encode`` x ->
    (mean, log_var), ``decode`` z [rows, latent] float32 -> logits (:func:`score_groups`)."""
    mean, log_var = encode(x)
    groups = score_groups(x, mean, log_var, k, rng)
    return joined([score(decode(rows)) for rows, score in groups])


def decoder_logits(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """The decoder's logits; from its probabilities when a graph offers only those."""
    if LOGITS in outputs:
        return outputs[LOGITS]
    probs = np.clip(np.asarray(outputs[PROBS], np.float64), 1e-7, 1 - 1e-7)
    return np.log(probs) - np.log1p(-probs)
