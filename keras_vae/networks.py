"""The encoder and decoder networks, built functionally.

Default architecture ("conv"): the convolutional one of the keras.io VAE example
(two stride-2 convolutions down to 7x7, dense bottleneck; mirrored with
transposed convolutions), with the widths taken from :class:`ModelConfig`.
"resnet" keeps that plan and adds residual blocks at each resolution: more depth
for the likelihood, still only standard layers, so saving and tf2onnx need nothing new.
"""

from __future__ import annotations

import keras
from keras import layers

from keras_vae.config import RESOLUTIONS, ModelConfig
from vae_contract import IMAGE_SHAPE, IMAGES, LOGITS, Z_LOG_VAR, Z_MEAN, Z

SIDE = RESOLUTIONS[-1]  # the feature maps' side after two stride-2 convolutions


def residual_block(x, filters: int, name: str, activation: str = "relu"):
    """x + conv(act(conv(x))), then act: two 3x3 convolutions that learn a correction."""
    y = layers.Conv2D(filters, 3, padding="same", activation=activation, name=f"{name}_conv1")(x)
    y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv2")(y)
    added = layers.Add(name=f"{name}_add")([x, y])
    return layers.Activation(activation, name=f"{name}_out")(added)


def build_encoder(config: ModelConfig) -> keras.Model:
    """images [N, 28, 28, 1] -> (z_mean, z_log_var), each [N, latent_dim]."""
    if config.architecture == "resnet":
        return _resnet_encoder(config)
    act = config.activation
    images = keras.Input(shape=IMAGE_SHAPE, name=IMAGES)
    x = images
    for filters in config.conv_filters:
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation=act)(x)
    return _encoder_head(images, x, config)


def build_decoder(config: ModelConfig) -> keras.Model:
    """z [N, latent_dim] -> Bernoulli logits [N, 28, 28, 1]."""
    if config.architecture == "resnet":
        return _resnet_decoder(config)
    act = config.activation
    first, second = config.conv_filters
    z = keras.Input(shape=(config.latent_dim,), name=Z)
    x = layers.Dense(SIDE * SIDE * second, activation=act)(z)
    x = layers.Reshape((SIDE, SIDE, second))(x)
    x = layers.Conv2DTranspose(second, 3, strides=2, padding="same", activation=act)(x)
    x = layers.Conv2DTranspose(first, 3, strides=2, padding="same", activation=act)(x)
    logits = layers.Conv2DTranspose(1, 3, padding="same", name=LOGITS)(x)
    return keras.Model(z, logits, name="decoder")


def _resnet_encoder(config: ModelConfig) -> keras.Model:
    act = config.activation
    images = keras.Input(shape=IMAGE_SHAPE, name=IMAGES)
    x = images
    for level, filters in enumerate(config.conv_filters):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation=act)(x)
        for block in range(config.residual_blocks):
            x = residual_block(x, filters, f"enc{level}_res{block}", act)
    return _encoder_head(images, x, config)


def _resnet_decoder(config: ModelConfig) -> keras.Model:
    act = config.activation
    first, second = config.conv_filters
    z = keras.Input(shape=(config.latent_dim,), name=Z)
    x = layers.Dense(config.hidden_units, activation=act)(z)
    x = layers.Dense(SIDE * SIDE * second, activation=act)(x)
    x = layers.Reshape((SIDE, SIDE, second))(x)
    for block in range(config.residual_blocks):
        x = residual_block(x, second, f"dec1_res{block}", act)
    x = layers.Conv2DTranspose(first, 3, strides=2, padding="same", activation=act)(x)
    for block in range(config.residual_blocks):
        x = residual_block(x, first, f"dec0_res{block}", act)
    x = layers.Conv2DTranspose(first, 3, strides=2, padding="same", activation=act)(x)
    logits = layers.Conv2D(1, 3, padding="same", name=LOGITS)(x)
    return keras.Model(z, logits, name="decoder")


def _encoder_head(images, features, config: ModelConfig) -> keras.Model:
    """Feature map -> dense -> the posterior's mean and log-variance."""
    x = layers.Flatten()(features)
    x = layers.Dense(config.hidden_units, activation=config.activation)(x)
    z_mean = layers.Dense(config.latent_dim, name=Z_MEAN)(x)
    z_log_var = layers.Dense(config.latent_dim, name=Z_LOG_VAR)(x)
    return keras.Model(images, [z_mean, z_log_var], name="encoder")
