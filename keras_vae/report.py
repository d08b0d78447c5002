"""Draw a trained VAE's pictures into its run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from keras import ops

from keras_vae import plots


def decode_probs(vae, z: np.ndarray) -> np.ndarray:
    """Bernoulli means of the decoder at latent points ``z``."""
    return ops.convert_to_numpy(ops.sigmoid(vae.decoder.predict(z, verbose=0)))


def write_pictures(
    vae, run_dir: Path, test_inputs: np.ndarray, test_labels: np.ndarray, seed: int = 0
) -> list[Path]:
    """Samples and reconstructions always; for a 2-D latent, the latent map and manifold too."""
    run_dir = Path(run_dir)
    written = []
    z = np.random.default_rng(seed).standard_normal((64, vae.latent_dim)).astype(np.float32)
    plots.save_samples(decode_probs(vae, z), run_dir / "samples.png")
    written.append(run_dir / "samples.png")

    originals = test_inputs[:30]
    reconstructions = vae.predict(originals, verbose=0)
    plots.save_reconstructions(originals, reconstructions, run_dir / "reconstructions.png")
    written.append(run_dir / "reconstructions.png")

    if vae.latent_dim == 2:
        z_mean, _ = vae.encoder.predict(test_inputs, batch_size=500, verbose=0)
        plots.save_latent_map(z_mean, test_labels, run_dir / "latent_map.png")
        plots.save_manifold(decode_probs(vae, plots.manifold_grid()), run_dir / "manifold.png")
        written += [run_dir / "latent_map.png", run_dir / "manifold.png"]
    return written
