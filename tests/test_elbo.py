"""The ELBO's pieces against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from keras import ops

from keras_vae.elbo import bernoulli_log_likelihood, elbo, gaussian_kl
from keras_vae.layers import Sampling


def _np(tensor) -> np.ndarray:
    return ops.convert_to_numpy(tensor)


def test_closed_form_kl_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(3, 4)).astype(np.float32)
    log_var = rng.uniform(-2.0, 1.0, size=(3, 4)).astype(np.float32)
    closed = _np(gaussian_kl(mean, log_var))

    samples = 400_000
    std = np.exp(0.5 * log_var)
    z = mean[None] + std[None] * rng.standard_normal((samples, 3, 4))
    log_q = -0.5 * (((z - mean) / std) ** 2 + log_var + math.log(2 * math.pi))
    log_p = -0.5 * (z**2 + math.log(2 * math.pi))
    monte_carlo = (log_q - log_p).sum(axis=-1).mean(axis=0)

    np.testing.assert_allclose(closed, monte_carlo, rtol=0.02, atol=0.02)
    assert closed.shape == (3,)
    assert np.all(closed > 0)


def test_kl_is_zero_for_the_prior_and_known_for_a_shifted_mean():
    assert _np(gaussian_kl(np.zeros((1, 5), "float32"), np.zeros((1, 5), "float32")))[0] == 0.0
    # KL(N(1, 1) || N(0, 1)) = 1/2 per unit.
    shifted = gaussian_kl(np.ones((1, 3), "float32"), np.zeros((1, 3), "float32"))
    assert _np(shifted)[0] == pytest.approx(1.5)


def test_bernoulli_log_likelihood_matches_the_direct_formula():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(4, 28, 28, 1)).astype(np.float32)
    x = (rng.random((4, 28, 28, 1)) < 0.3).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    direct = (x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(4, -1).sum(axis=1)
    np.testing.assert_allclose(_np(bernoulli_log_likelihood(x, logits)), direct, rtol=1e-5)


def test_bernoulli_log_likelihood_is_stable_for_saturated_logits():
    logits = np.array([[100.0, -100.0, 100.0, -100.0]], dtype=np.float32)
    x = np.array([[1.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    # Right with certainty costs 0 nats; wrong with |logit| = 100 costs 100 nats each.
    assert _np(bernoulli_log_likelihood(x, logits))[0] == pytest.approx(-200.0, abs=1e-3)


def test_elbo_of_a_known_tiny_case():
    # Logits 0 put p = 1/2 on every pixel: log p(x|z) = 784 * log(1/2) for any image.
    x = np.zeros((2, 28, 28, 1), dtype=np.float32)
    x[1, :14] = 1.0
    logits = np.zeros_like(x)
    z_mean = np.array([[0.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    z_log_var = np.zeros((2, 2), dtype=np.float32)
    expected = np.array([784 * math.log(0.5), 784 * math.log(0.5) - 0.5])
    np.testing.assert_allclose(_np(elbo(x, logits, z_mean, z_log_var)), expected, rtol=1e-6)


def test_sampling_draws_from_the_posterior_and_repeats_after_reset():
    layer = Sampling(seed=3)
    mean = np.full((20_000, 2), [2.0, -1.0], dtype=np.float32)
    log_var = np.full((20_000, 2), [0.0, math.log(0.25)], dtype=np.float32)
    first = _np(layer([mean, log_var]))
    np.testing.assert_allclose(first.mean(axis=0), [2.0, -1.0], atol=0.03)
    np.testing.assert_allclose(first.std(axis=0), [1.0, 0.5], rtol=0.03)
    assert not np.array_equal(first, _np(layer([mean, log_var])))
    layer.reset_seed()
    np.testing.assert_array_equal(first, _np(layer([mean, log_var])))
