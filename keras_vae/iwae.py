"""The importance-weighted estimate of log p(x) (Burda et al., 2016), in numpy only.

    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K,  z_k ~ q(z|x)

It is a lower bound whose expectation rises to log p(x) as K grows; K = 1 is the
ELBO. The networks are passed in as plain functions on numpy arrays, so the same
estimator (and the same noise, for a given seed) measures the in-memory Keras
model and the exported ONNX graphs; this module imports no TensorFlow.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import numpy as np

Encode = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Decode = Callable[[np.ndarray], np.ndarray]
LOG_2PI = math.log(2.0 * math.pi)
# Rows decoded per call: bounds memory (10,000 x 784 floats = 31 MB).
MAX_ROWS = 10_000


def bernoulli_log_prob(x: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Sum over pixels of x*l - softplus(l), per leading row (stable for any logit)."""
    values = x * logits - np.logaddexp(0.0, logits)
    return values.reshape(values.shape[0], -1).sum(axis=1)


def log_normal(z: np.ndarray, mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """log N(z; mean, diag(exp(log_var))), summed over the last axis."""
    return -0.5 * np.sum(LOG_2PI + log_var + (z - mean) ** 2 / np.exp(log_var), axis=-1)


def log_weights(
    x: np.ndarray,
    encode: Encode,
    decode: Decode,
    k: int,
    rng: np.random.Generator,
    log_likelihood: Callable[[np.ndarray, np.ndarray], np.ndarray] = bernoulli_log_prob,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log w [B, K] for a batch, with the posterior mean and log-variance [B, latent]."""
    mean, log_var = (np.asarray(v, np.float64) for v in encode(x))
    batch, latent = mean.shape
    chunk = max(1, min(k, MAX_ROWS // batch))
    weights = np.empty((batch, k))
    for start in range(0, k, chunk):
        size = min(chunk, k - start)
        eps = rng.standard_normal((size, batch, latent))
        z = mean + np.exp(0.5 * log_var) * eps  # [size, B, latent]
        flat = z.reshape(size * batch, latent)
        output = np.asarray(decode(flat.astype(np.float32)), np.float64)
        repeated = np.broadcast_to(x, (size, *x.shape)).reshape(size * batch, *x.shape[1:])
        log_px_z = log_likelihood(repeated, output).reshape(size, batch)
        log_pz = log_normal(z, 0.0, np.zeros_like(z))
        log_qz = log_normal(z, mean, log_var)
        weights[:, start : start + size] = (log_px_z + log_pz - log_qz).T
    return weights, mean, log_var


def iwae_bound(weights: np.ndarray) -> np.ndarray:
    """logsumexp over K minus log K, per example, computed stably."""
    top = weights.max(axis=1, keepdims=True)
    return top[:, 0] + np.log(np.mean(np.exp(weights - top), axis=1))


def active_units(means: np.ndarray, threshold: float = 0.01) -> int:
    """Latent units whose posterior mean varies across the data: Cov_x(E_q[z_u]) > threshold."""
    return int(np.sum(np.var(means, axis=0) > threshold))


def evaluate_likelihood(
    images: np.ndarray,
    encode: Encode,
    decode: Decode,
    k: int = 1000,
    batch_size: int = 50,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Test NLL (-IWAE bound), ELBO, KL and active units over ``images``, in nats per image."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rng = np.random.default_rng(seed)
    bounds, elbos, kls, means = [], [], [], []
    started = time.monotonic()
    reporter = _Progress(len(images), progress)
    for start in range(0, len(images), batch_size):
        x = np.asarray(images[start : start + batch_size], np.float32)
        weights, mean, log_var = log_weights(x, encode, decode, k, rng)
        bounds.append(iwae_bound(weights))
        elbos.append(weights.mean(axis=1))  # the ELBO, averaged over the same K samples
        kls.append(0.5 * np.sum(np.exp(log_var) + mean**2 - 1.0 - log_var, axis=1))
        means.append(mean)
        reporter.update(start + len(x))
    log_px = np.concatenate(bounds)
    return {
        "test_nll": float(-log_px.mean()),
        "test_nll_stderr": float(log_px.std(ddof=1) / math.sqrt(len(log_px)))
        if len(log_px) > 1
        else 0.0,
        "test_elbo_k_samples": float(np.concatenate(elbos).mean()),
        "test_kl": float(np.concatenate(kls).mean()),
        "active_units": active_units(np.concatenate(means)),
        "latent_dim": int(means[0].shape[1]),
        "iwae_k": k,
        "iwae_seed": seed,
        "iwae_images": int(len(log_px)),
        "iwae_seconds": round(time.monotonic() - started, 1),
    }


class _Progress:
    """One updating line on a terminal; a line per 10 % in a log."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.next_decile = 1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        left = elapsed / done * (self.total - done)
        line = f"IWAE {done}/{self.total} images, {elapsed:.0f} s elapsed, ~{left:.0f} s left"
        if self.tty:
            print("\r" + line, end="\n" if done == self.total else "", file=sys.stderr, flush=True)
        elif done * 10 >= self.next_decile * self.total:
            print(line, file=sys.stderr, flush=True)
            self.next_decile = done * 10 // self.total + 1
