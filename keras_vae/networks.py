"""The encoder and decoder networks, built functionally.

Default architecture: the convolutional one of the keras.io VAE example
(two stride-2 convolutions down to 7x7, dense bottleneck; mirrored with
transposed convolutions), with the widths taken from :class:`ModelConfig`.
"""

from __future__ import annotations

import keras
from keras import layers

from keras_vae.config import ModelConfig
from keras_vae.data import IMAGE_SHAPE


def build_encoder(config: ModelConfig) -> keras.Model:
    """images [N, 28, 28, 1] -> (z_mean, z_log_var), each [N, latent_dim]."""
    images = keras.Input(shape=IMAGE_SHAPE, name="images")
    x = images
    for filters in config.conv_filters:
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(config.hidden_units, activation="relu")(x)
    z_mean = layers.Dense(config.latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(config.latent_dim, name="z_log_var")(x)
    return keras.Model(images, [z_mean, z_log_var], name="encoder")


def build_decoder(config: ModelConfig) -> keras.Model:
    """z [N, latent_dim] -> Bernoulli logits [N, 28, 28, 1]."""
    first, second = config.conv_filters
    z = keras.Input(shape=(config.latent_dim,), name="z")
    x = layers.Dense(7 * 7 * second, activation="relu")(z)
    x = layers.Reshape((7, 7, second))(x)
    x = layers.Conv2DTranspose(second, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2DTranspose(first, 3, strides=2, padding="same", activation="relu")(x)
    logits = layers.Conv2DTranspose(1, 3, padding="same", name="logits")(x)
    return keras.Model(z, logits, name="decoder")
