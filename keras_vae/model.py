"""The variational autoencoder: a subclassed ``keras.Model`` whose steps compute the ELBO.

``train_step`` maximises E_q[log p(x|z)] - beta * w(t) * KL(q(z|x) || N(0, I))
with one reparameterized sample, where w(t) ramps linearly from 0 to 1 over the
KL warm-up. With ``iw_samples`` k > 1 it maximises the importance-weighted bound
logsumexp_k [log p(x|z_k) + w(t) (log p(z_k) - log q(z_k|x))] - log k instead
(Burda et al., 2016): tighter than the ELBO, so the decoder is trained towards the
likelihood itself, at k decoder passes per image; ``iw_start_step`` delays it, so that
a run can train on the cheaper ELBO first and fine-tune on the bound. ``test_step`` reports the true
ELBO (weight beta, no warm-up) with noise that restarts at every ``evaluate``, so
held-out figures are repeatable.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf
from keras import ops

from keras_vae.config import ModelConfig
from keras_vae.distribute import Replicas
from keras_vae.elbo import per_example_loss
from keras_vae.layers import Sampling
from keras_vae.networks import build_decoder, build_encoder


@keras.saving.register_keras_serializable(package="keras_vae")
class VAE(keras.Model):
    """Encoder -> Sampling -> decoder, trained on the negative ELBO.

    Metrics (per example, in nats): ``loss`` (the objective being minimised),
    ``reconstruction`` (-log p(x|z)), ``kl`` and ``elbo``.
    """

    def __init__(
        self,
        encoder: keras.Model,
        decoder: keras.Model,
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        seed: int | None = None,
        iw_samples: int = 1,
        iw_start_step: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.iw_samples = int(iw_samples)
        self.iw_start_step = int(iw_start_step)
        self.encoder = encoder
        self.decoder = decoder
        self.beta = float(beta)
        self.kl_warmup_steps = int(kl_warmup_steps)
        self.seed = seed
        self.sampler = Sampling(seed=seed, name="sampler")
        self.eval_sampler = Sampling(seed=None if seed is None else seed + 1, name="eval_sampler")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.elbo_tracker = keras.metrics.Mean(name="elbo")
        # Every variable exists once the (functional) encoder and decoder do, so the
        # model is built now; this lets saving and loading restore the optimizer too.
        self.built = True

    @classmethod
    def from_model_config(
        cls,
        config: ModelConfig,
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        seed: int = 0,
        iw_samples: int = 1,
        iw_start_step: int = 0,
    ) -> VAE:
        """Build the default encoder/decoder pair for ``config``."""
        return cls(
            build_encoder(config),
            build_decoder(config),
            beta=beta,
            kl_warmup_steps=kl_warmup_steps,
            seed=seed,
            iw_samples=iw_samples,
            iw_start_step=iw_start_step,
        )

    @property
    def latent_dim(self) -> int:
        return int(self.decoder.inputs[0].shape[-1])

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        # Listing the trackers here is what makes Keras reset them every epoch
        # and show their values (not 0.0000e+00) in the progress bar.
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker, self.elbo_tracker]

    def call(self, inputs, training: bool = False):
        """Reconstruction probabilities from the posterior mean: deterministic, for ``predict``."""
        z_mean, _ = self.encoder(inputs, training=training)
        return ops.sigmoid(self.decoder(z_mean, training=training))

    def kl_weight(self):
        """beta, ramped linearly from 0 over the first ``kl_warmup_steps`` optimizer steps."""
        if self.kl_warmup_steps <= 0:
            return ops.convert_to_tensor(self.beta, dtype="float32")
        progress = ops.cast(self.optimizer.iterations, "float32") / float(self.kl_warmup_steps)
        return self.beta * ops.minimum(progress, 1.0)

    def loss_per_example(self, x, kl_weight, samples: int = 1, training: bool = True):
        """Forward pass to ``(loss, log_px_z, kl)`` per example, with k = ``samples`` z's each.

        The k samples share one encoder pass; the decoder sees them as one batch of k*B.
        Training draws from ``sampler``, evaluation (``training=False``) from ``eval_sampler``.
        """
        z_mean, z_log_var = self.encoder(x, training=training)
        sampler = self.sampler if training else self.eval_sampler
        z, epsilon = sampler.draw(z_mean, z_log_var, samples)  # [k, B, latent]
        logits = self.decoder(ops.reshape(z, (-1, ops.shape(z)[-1])), training=training)
        return per_example_loss(x, logits, z, epsilon, z_mean, z_log_var, kl_weight)

    def _training_loss(self, x, kl_weight):
        """The ELBO's loss, or the k-sample bound's from ``iw_start_step`` on (fine-tuning)."""
        bound = functools.partial(self.loss_per_example, x, kl_weight, self.iw_samples)
        if self.iw_samples == 1 or self.iw_start_step <= 0:
            return bound()
        elbo = functools.partial(self.loss_per_example, x, kl_weight, 1)
        return tf.cond(self.optimizer.iterations >= self.iw_start_step, bound, elbo)

    def _record(self, loss, log_likelihood, kl) -> dict:
        self.loss_tracker.update_state(loss)
        self.reconstruction_tracker.update_state(-log_likelihood)
        self.kl_tracker.update_state(kl)
        self.elbo_tracker.update_state(log_likelihood - kl)
        return Replicas.outputs({metric.name: metric.result() for metric in self.metrics})

    def train_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            loss, log_likelihood, kl = self._training_loss(x, self.kl_weight())
            scaled = Replicas.share(ops.mean(loss))
        gradients = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights, strict=True))
        return self._record(loss, log_likelihood, kl)

    def test_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        return self._record(*self.loss_per_example(x, self.beta, training=False))

    def evaluate(self, *args, **kwargs):
        # fit() validates through evaluate() too, so every held-out figure
        # is computed with the same noise sequence.
        self.eval_sampler.reset_seed()
        return super().evaluate(*args, **kwargs)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "beta": self.beta,
            "kl_warmup_steps": self.kl_warmup_steps,
            "seed": self.seed,
            "iw_samples": self.iw_samples,
            "iw_start_step": self.iw_start_step,
        }

    @classmethod
    def from_config(cls, config: dict) -> VAE:
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
        return cls(**config)
