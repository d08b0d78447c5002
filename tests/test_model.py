"""The networks, the subclassed VAE's steps, and saving in the native .keras format."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_vae.config import ModelConfig
from keras_vae.errors import ConfigError
from keras_vae.model import VAE
from keras_vae.networks import build_decoder, build_encoder


def _binary_images(count: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((count, 28, 28, 1)) < 0.2).astype(np.float32)


@pytest.mark.parametrize("architecture", ["conv", "resnet"])
def test_networks_have_the_contract_shapes_with_any_batch(architecture):
    config = ModelConfig(
        latent_dim=5, conv_filters=(8, 16), hidden_units=32, architecture=architecture
    )
    encoder, decoder = build_encoder(config), build_decoder(config)
    for batch in (1, 7):
        z_mean, z_log_var = encoder(_binary_images(batch))
        assert z_mean.shape == (batch, 5) and z_log_var.shape == (batch, 5)
        assert decoder(np.zeros((batch, 5), np.float32)).shape == (batch, 28, 28, 1)
    assert [t.name for t in encoder.inputs] == ["images"]
    assert [t.name for t in decoder.inputs] == ["z"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"latent_dim": 0}, "latent_dim must be a positive integer, got 0"),
        ({"conv_filters": (32,)}, "conv_filters must be two positive integers"),
        ({"hidden_units": 0}, "hidden_units must be >= 1"),
        ({"architecture": "transformer"}, "unknown architecture 'transformer'; choose one of"),
        ({"residual_blocks": -1}, "residual_blocks must be >= 0"),
    ],
)
def test_model_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**kwargs)


def _small_vae(**kwargs) -> VAE:
    keras.utils.set_random_seed(0)
    vae = VAE.from_model_config(
        ModelConfig(latent_dim=3, conv_filters=(8, 16), hidden_units=32), **kwargs
    )
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    return vae


def test_untrained_model_scores_about_784_log_2_nats():
    # Small random weights put p ~ 1/2 on every pixel: -ELBO ~ 784 * log 2 = 543.4.
    results = _small_vae().evaluate(_binary_images(64), verbose=0, return_dict=True)
    assert 500 < -results["elbo"] < 600
    assert results["elbo"] == pytest.approx(-results["reconstruction"] - results["kl"], abs=1e-3)
    assert results["loss"] == pytest.approx(-results["elbo"], abs=1e-3)


def test_evaluation_is_repeatable():
    vae, x = _small_vae(seed=5), _binary_images(64)
    first = vae.evaluate(x, batch_size=16, verbose=0, return_dict=True)
    assert vae.evaluate(x, batch_size=16, verbose=0, return_dict=True) == first


def test_kl_warm_up_ramps_linearly_over_optimizer_steps():
    vae = _small_vae(beta=2.0, kl_warmup_steps=8)
    assert float(vae.kl_weight()) == 0.0
    vae.fit(_binary_images(32), batch_size=8, epochs=1, verbose=0)  # 4 steps
    assert float(vae.kl_weight()) == pytest.approx(1.0)  # beta * 4 / 8
    vae.fit(_binary_images(64), batch_size=8, epochs=1, verbose=0)  # 8 more steps
    assert float(vae.kl_weight()) == pytest.approx(2.0)


def test_training_loss_uses_the_warm_up_weight_and_validation_does_not():
    vae = _small_vae(kl_warmup_steps=1000)
    history = vae.fit(
        _binary_images(32), batch_size=8, epochs=1, verbose=0, validation_data=(_binary_images(8),)
    )
    logs = {k: v[-1] for k, v in history.history.items()}
    # Early in the warm-up the KL weighs almost nothing in the training objective.
    assert logs["loss"] == pytest.approx(logs["reconstruction"], rel=0.01)
    assert logs["val_loss"] == pytest.approx(logs["val_reconstruction"] + logs["val_kl"], rel=1e-5)


def test_save_and_load_give_identical_outputs_and_state(tmp_path):
    vae, x = _small_vae(beta=0.5, kl_warmup_steps=3, seed=9), _binary_images(32)
    vae.fit(x, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "vae.keras"
    vae.save(path)
    loaded = keras.saving.load_model(path)

    assert isinstance(loaded, VAE)
    assert (loaded.beta, loaded.kl_warmup_steps, loaded.seed, loaded.latent_dim) == (0.5, 3, 9, 3)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), vae.predict(x, verbose=0))
    for got, want in zip(loaded.encoder(x), vae.encoder(x), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert int(loaded.optimizer.iterations) == int(vae.optimizer.iterations) == 4
    assert loaded.evaluate(x, verbose=0, return_dict=True) == vae.evaluate(
        x, verbose=0, return_dict=True
    )


@pytest.mark.parametrize("k", [1, 4])
def test_importance_weighted_objective_matches_the_numpy_estimator(k):
    # The training objective with k samples and the evaluation's estimator are two
    # implementations of the same bound: averaged over many draws they must agree.
    from keras_vae.iwae import iwae_bound, log_weights

    vae, x = _small_vae(iw_samples=k), _binary_images(32)
    draws = 300
    trained = np.mean([-float(ops.mean(vae.loss_per_example(x, 1.0, k)[0])) for _ in range(draws)])
    weights, _, _ = log_weights(
        x,
        lambda a: [np.asarray(t) for t in vae.encoder(a)],
        lambda z: np.asarray(vae.decoder(z)),
        k * draws,
        np.random.default_rng(0),
    )
    measured = np.mean([iwae_bound(weights[:, i * k : (i + 1) * k]).mean() for i in range(draws)])
    assert trained == pytest.approx(measured, abs=0.1)


def test_importance_weighted_training_is_tighter_than_the_elbo_and_saves_k():
    vae, x = _small_vae(iw_samples=8, seed=3), _binary_images(64)
    elbo = vae.evaluate(x, verbose=0, return_dict=True)["elbo"]
    bound = -float(ops.mean(vae.loss_per_example(x, 1.0, 8)[0]))
    assert bound > elbo  # log-mean-exp of 8 weights beats their mean
    history = vae.fit(x, batch_size=16, epochs=2, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert (
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(vae)).iw_samples
        == 8
    )


def test_importance_weighted_fine_tuning_starts_at_its_step():
    vae, x = _small_vae(iw_samples=8, iw_start_step=4, seed=1), _binary_images(32)
    first = {k: v[-1] for k, v in vae.fit(x, batch_size=8, epochs=1, verbose=0).history.items()}
    # Steps 1-4 train on the ELBO: the loss is exactly reconstruction + KL.
    assert first["loss"] == pytest.approx(first["reconstruction"] + first["kl"], rel=1e-5)
    later = {k: v[-1] for k, v in vae.fit(x, batch_size=8, epochs=1, verbose=0).history.items()}
    # From step 5 the loss is the negative 8-sample bound: another quantity, no worse.
    negative_elbo = later["reconstruction"] + later["kl"]
    assert abs(later["loss"] - negative_elbo) > 1e-3 and later["loss"] < negative_elbo + 0.05
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(vae))
    assert copy.iw_start_step == 4
