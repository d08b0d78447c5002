"""The pieces of the evidence lower bound, written with ``keras.ops``.

ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || N(0, I)), per example, in nats.
Each function returns one value per example (shape ``[B]``); callers average.
"""

from __future__ import annotations

import math

from keras import ops

LOG_2PI = math.log(2.0 * math.pi)


def _sum_per_example(values):
    return ops.sum(ops.reshape(values, (ops.shape(values)[0], -1)), axis=1)


def bernoulli_log_likelihood(x, logits):
    """log p(x | logits) under independent Bernoulli pixels, summed per example.

    Uses x*l - softplus(l), which equals x*log(sigmoid(l)) + (1-x)*log(1-sigmoid(l))
    without ever taking the log of a saturated sigmoid.
    """
    x = ops.cast(x, logits.dtype)
    return _sum_per_example(x * logits - ops.softplus(logits))


def gaussian_kl(z_mean, z_log_var):
    """Closed-form KL(N(mean, exp(log_var)) || N(0, I)), summed over latent units."""
    return 0.5 * ops.sum(ops.exp(z_log_var) + ops.square(z_mean) - 1.0 - z_log_var, axis=-1)


def standard_normal_log_density(z):
    """log N(z; 0, I), summed over the last axis."""
    return -0.5 * ops.sum(ops.square(z) + LOG_2PI, axis=-1)


def elbo(x, logits, z_mean, z_log_var):
    """Single-sample ELBO per example: log p(x|z) - KL(q(z|x) || p(z))."""
    return bernoulli_log_likelihood(x, logits) - gaussian_kl(z_mean, z_log_var)
