"""The two serving functions, as ``tf.function``s with named inputs and dict outputs.

Both the SavedModel signature and the ONNX graph are traced from these, which is
what makes the tensor names identical in the two formats. No random op appears:
the caller draws the sampling noise, since tf2onnx cannot convert TF's random ops.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from vae_contract import DECODER, ENCODER, INPUTS, LOGITS, PROBS, Z_LOG_VAR, Z_MEAN, input_shape


def input_spec(network: str, latent_dim: int) -> tf.TensorSpec:
    return tf.TensorSpec(input_shape(network, latent_dim), tf.float32, name=INPUTS[network])


def serving_function(vae, network: str) -> Callable:
    """A plain Python function over the VAE's sub-network, returning the contract's outputs."""
    if network == ENCODER:

        def encode(images):
            z_mean, z_log_var = vae.encoder(images, training=False)
            return {Z_MEAN: z_mean, Z_LOG_VAR: z_log_var}

        return encode
    if network == DECODER:

        def decode(z):
            logits = vae.decoder(z, training=False)
            return {PROBS: tf.sigmoid(logits), LOGITS: logits}

        return decode
    raise ValueError(f"unknown network {network!r}")
