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

import keras
import tensorflow as tf
from keras import ops

from keras_vae.config import ModelConfig
from keras_vae.elbo import bernoulli_log_likelihood, gaussian_kl, standard_normal_log_density
from keras_vae.layers import Sampling
from keras_vae.networks import build_decoder, build_encoder


def _multi_worker() -> bool:
    strategy = tf.distribute.get_strategy()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.extended._in_multi_worker_mode()
    )


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

    def _elbo_terms(self, x, sampler: Sampling, training: bool):
        """Per-example log p(x|z) and KL(q(z|x) || p(z)) with one reparameterized z."""
        z_mean, z_log_var = self.encoder(x, training=training)
        z = sampler([z_mean, z_log_var])
        logits = self.decoder(z, training=training)
        return bernoulli_log_likelihood(x, logits), gaussian_kl(z_mean, z_log_var)

    def _iwae_objective(self, x, kl_weight):
        """Per-example importance-weighted bound with k samples, its mean log p(x|z) and KL.

        The k samples share one encoder pass; the decoder sees them as one batch of k*B.
        """
        k = self.iw_samples
        z_mean, z_log_var = self.encoder(x, training=True)
        batch, latent = ops.shape(z_mean)[0], ops.shape(z_mean)[1]
        epsilon = keras.random.normal((k, batch, latent), seed=self.sampler.seed_generator)
        z = z_mean + ops.exp(0.5 * z_log_var) * epsilon  # [k, B, latent]
        logits = self.decoder(ops.reshape(z, (k * batch, latent)), training=True)
        repeated = ops.reshape(ops.tile(x[None], (k, 1, 1, 1, 1)), (k * batch, *x.shape[1:]))
        log_px_z = ops.reshape(bernoulli_log_likelihood(repeated, logits), (k, batch))
        # log q(z|x) at z = mean + sigma * eps, written with eps: no division by sigma.
        log_qz = standard_normal_log_density(epsilon) - 0.5 * ops.sum(z_log_var, axis=-1)
        log_w = log_px_z + kl_weight * (standard_normal_log_density(z) - log_qz)
        bound = ops.logsumexp(log_w, axis=0) - ops.log(float(k))
        return bound, ops.mean(log_px_z, axis=0), gaussian_kl(z_mean, z_log_var)

    def _record(self, log_likelihood, kl, kl_weight, loss=None) -> dict:
        self.loss_tracker.update_state(kl_weight * kl - log_likelihood if loss is None else loss)
        self.reconstruction_tracker.update_state(-log_likelihood)
        self.kl_tracker.update_state(kl)
        self.elbo_tracker.update_state(log_likelihood - kl)
        results = {metric.name: metric.result() for metric in self.metrics}
        if _multi_worker():
            # Keras 3.15 averages step outputs across workers with reduce(axis=0), which
            # fails on scalars: give each a length-1 axis that the average removes.
            results = {name: ops.reshape(value, (1,)) for name, value in results.items()}
        return results

    def train_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        kl_weight = self.kl_weight()

        def elbo_objective():
            log_likelihood, kl = self._elbo_terms(x, self.sampler, training=True)
            return kl_weight * kl - log_likelihood, log_likelihood, kl

        def iwae_objective():
            bound, log_likelihood, kl = self._iwae_objective(x, kl_weight)
            return -bound, log_likelihood, kl

        with tf.GradientTape() as tape:
            if self.iw_samples == 1:
                per_example, log_likelihood, kl = elbo_objective()
            elif self.iw_start_step <= 0:
                per_example, log_likelihood, kl = iwae_objective()
            else:  # the ELBO first, then the k-sample bound: a fine-tuning phase
                started = self.optimizer.iterations >= self.iw_start_step
                per_example, log_likelihood, kl = tf.cond(started, iwae_objective, elbo_objective)
            loss = ops.mean(per_example)
            # Under tf.distribute each replica sees 1/R of the global batch and the
            # optimizer sums the replicas' gradients: dividing by R makes the step the
            # gradient of the mean over the global batch, whatever the replica count.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        gradients = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights, strict=True))
        return self._record(log_likelihood, kl, kl_weight, per_example)

    def test_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        log_likelihood, kl = self._elbo_terms(x, self.eval_sampler, training=False)
        return self._record(log_likelihood, kl, self.beta)

    def evaluate(self, *args, **kwargs):
        # fit() validates through evaluate() too, so every held-out figure
        # is computed with the same noise sequence.
        self.eval_sampler.reset_seed()
        return super().evaluate(*args, **kwargs)

    def get_config(self) -> dict:
        return {
            "name": self.name,
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
