"""The two random steps a VAE needs outside its graphs (tf2onnx cannot export them):
the reparameterized posterior sample, and a draw from the prior. Shared by the HTTP
service and :class:`serving.client.LocalVae`, so both give the same z for a seed."""

from __future__ import annotations

import numpy as np

from vae_contract import Z_LOG_VAR, Z_MEAN

_unseeded = np.random.default_rng()  # building a generator costs more than a small draw


def rng(seed: int | None) -> np.random.Generator:
    return _unseeded if seed is None else np.random.default_rng(seed)


def fresh_seed() -> int:
    """A seed for a caller who gave none, returned to them so the answer can be replayed."""
    return int(_unseeded.integers(2**63))


def reparameterize(outputs: dict[str, np.ndarray], seed: int | None) -> np.ndarray:
    """z = mean + exp(log_var / 2) * eps, eps ~ N(0, I), from the encoder's outputs."""
    noise = rng(seed).standard_normal(outputs[Z_MEAN].shape)
    return (outputs[Z_MEAN] + np.exp(0.5 * outputs[Z_LOG_VAR]) * noise).astype(np.float32)


def prior(n: int, latent_dim: int, temperature: float, seed: int | None) -> np.ndarray:
    """n latent vectors z ~ N(0, temperature^2 I)."""
    return (temperature * rng(seed).standard_normal((n, latent_dim))).astype(np.float32)
