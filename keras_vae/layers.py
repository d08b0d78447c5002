"""The reparameterization trick as a Keras layer."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vae")
class Sampling(keras.layers.Layer):
    """Draws z = mean + exp(log_var / 2) * eps with eps ~ N(0, I).

    Writing the sample as a deterministic function of (mean, log_var) and
    independent noise lets gradients flow into the encoder. The noise comes
    from the layer's own seeded generator, whose state is saved with the model.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True  # no weights to create lazily

    def call(self, inputs):
        z_mean, z_log_var = inputs
        return self.draw(z_mean, z_log_var)[0]

    def draw(self, z_mean, z_log_var, samples: int | None = None):
        """``(z, epsilon)``: one z per row, or ``samples`` of them on a new leading axis.

        The importance-weighted bound draws k samples per image and needs the noise
        itself, to evaluate log q(z|x) without dividing by sigma.
        """
        shape = ops.shape(z_mean) if samples is None else (samples, *ops.shape(z_mean))
        epsilon = keras.random.normal(shape, seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon, epsilon

    def reset_seed(self) -> None:
        """Restart the noise sequence, so that a repeated evaluation draws the same noise."""
        seed = self.seed if self.seed is not None else 0
        self.seed_generator.state.assign(ops.convert_to_tensor([seed, 0], dtype="uint32"))

    def get_config(self) -> dict:
        return {**super().get_config(), "seed": self.seed}
