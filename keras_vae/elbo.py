"""The evidence lower bound and the training loss, written with ``keras.ops``.

ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || N(0, I)), per example, in nats.
Each function returns one value per example (shape ``[B]``); callers average.
The numpy maths of evaluation and serving is :mod:`vae_contract.likelihood`.
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


def per_example_loss(x, logits, z, epsilon, z_mean, z_log_var, kl_weight):
    """The training loss per example, with its log p(x|z) and KL: ``(loss, log_px_z, kl)``.

    ``z`` and ``epsilon`` hold k posterior samples per image, ``[k, B, latent]``, with
    ``z = mean + sigma * epsilon``; ``logits`` are the decoder's on them, ``[k * B, ...]``.
    With k = 1 the loss is the negative ELBO, beta-weighted: w * KL - log p(x|z), its KL in
    closed form. With k > 1 it is the negative importance-weighted bound (Burda et al.,
    2016), logsumexp_k [log p(x|z_k) + w (log p(z_k) - log q(z_k|x))] - log k, which needs
    each sample's own weight; log p(x|z) is then the mean over the k samples.
    """
    k, batch = z.shape[0], ops.shape(z)[1]
    repeated = ops.reshape(ops.tile(x[None], (k, 1, 1, 1, 1)), (k * batch, *x.shape[1:]))
    log_px_z = ops.reshape(bernoulli_log_likelihood(repeated, logits), (k, batch))
    kl = gaussian_kl(z_mean, z_log_var)
    if k == 1:
        return kl_weight * kl - log_px_z[0], log_px_z[0], kl
    # log q(z|x) at z = mean + sigma * eps, written with eps: no division by sigma.
    log_qz = standard_normal_log_density(epsilon) - 0.5 * ops.sum(z_log_var, axis=-1)
    log_w = log_px_z + kl_weight * (standard_normal_log_density(z) - log_qz)
    bound = ops.logsumexp(log_w, axis=0) - ops.log(float(k))
    return -bound, ops.mean(log_px_z, axis=0), kl
