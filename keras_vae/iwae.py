"""The importance-weighted estimate of log p(x) (Burda et al., 2016) over a dataset.

The maths (one formula for evaluation, the service and the client) is in
:mod:`vae_contract.likelihood`; this module runs it over many images, in chunks that
bound memory, with a progress line. The networks are passed in as plain functions on
numpy arrays, so the same estimator (and the same noise, for a given seed) measures
the in-memory Keras model and the exported ONNX graphs; it imports no TensorFlow.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import numpy as np

from vae_contract.likelihood import (
    HEADLINE_K,
    bernoulli_log_prob,
    gaussian_kl,
    iwae_bound,
    log_normal,
    posterior_samples,
)
from vae_contract.likelihood import log_weights as weights_of_samples

Encode = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Decode = Callable[[np.ndarray], np.ndarray]
# Rows decoded per call: bounds memory (10,000 x 784 floats = 31 MB).
MAX_ROWS = 10_000
__all__ = ["bernoulli_log_prob", "iwae_bound", "log_normal", "log_weights"]


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
        z = posterior_samples(mean, log_var, size, rng)  # [size, B, latent]
        output = decode(z.reshape(size * batch, latent).astype(np.float32))
        weights[:, start : start + size] = weights_of_samples(
            x, z, mean, log_var, np.asarray(output, np.float64), log_likelihood
        )[0]
    return weights, mean, log_var


def active_units(means: np.ndarray, threshold: float = 0.01) -> int:
    """Latent units whose posterior mean varies across the data: Cov_x(E_q[z_u]) > threshold."""
    return int(np.sum(np.var(means, axis=0) > threshold))


def evaluate_likelihood(
    images: np.ndarray,
    encode: Encode,
    decode: Decode,
    k: int = HEADLINE_K,
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
        kls.append(gaussian_kl(mean, log_var))
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
