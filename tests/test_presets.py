"""Presets, the residual architecture and the cosine schedule, through a real short training."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from keras_vae.config import ModelConfig, RunConfig, TrainConfig, load_preset, preset_names
from keras_vae.errors import ConfigError
from keras_vae.train import build_parser, config_from_args


def test_keras_io_preset_and_flags_that_override_it():
    assert "keras-io-2d" in preset_names()
    config = config_from_args(build_parser().parse_args(["--preset", "keras-io-2d"]))
    assert (config.model.latent_dim, config.model.hidden_units) == (2, 16)
    assert config.train.epochs == 30
    config = config_from_args(
        build_parser().parse_args(["--preset", "keras-io-2d", "--epochs", "3", "--seed", "4"])
    )
    assert (config.model.latent_dim, config.train.epochs, config.train.seed) == (2, 3, 4)


def test_every_preset_is_a_valid_configuration():
    for name in preset_names():
        preset = load_preset(name)
        assert preset.get("description"), f"{name} explains itself"
        RunConfig.from_dict(preset)  # raises on an unknown key or a bad value


def test_unknown_presets_and_schedules_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown preset 'best'; choose one of"):
        load_preset("best")
    with pytest.raises(ConfigError, match="unknown lr_schedule 'step'"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--preset", "nope"])
    assert isinstance(build_parser().parse_args([]), argparse.Namespace)


def test_resnet_with_cosine_schedule_trains_saves_and_reloads(data_config, tmp_path, splits):
    import dataclasses

    import keras

    from keras_vae.runs import load_vae
    from keras_vae.train import train

    config = RunConfig(
        data=dataclasses.replace(data_config, train_size=1024, validation_size=256),
        model=ModelConfig(
            latent_dim=4, conv_filters=(8, 16), hidden_units=32, architecture="resnet"
        ),
        train=TrainConfig(epochs=2, lr_schedule="cosine", output_dir=str(tmp_path), run_name="res"),
    )
    run_dir = train(config)
    vae = load_vae(run_dir / "model.keras")
    assert any("res0_add" in layer.name for layer in vae.encoder.layers)
    schedule = vae.optimizer.learning_rate
    steps = int(vae.optimizer.iterations.numpy())
    assert steps == 2 * (1024 // 128)
    # The cosine schedule has decayed from 1e-3 toward its 5 % floor by the last step.
    assert float(keras.ops.convert_to_numpy(schedule)) < 1e-3 * 0.2
    images = (splits.test_images[:5] / 255.0).astype(np.float32)[..., :1]
    again = load_vae(run_dir / "model.keras")
    np.testing.assert_array_equal(vae.predict(images, verbose=0), again.predict(images, verbose=0))
