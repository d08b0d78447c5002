"""Pictures of a trained VAE, as PNG files in its run folder: what people would rather look
at than read. Samples and reconstructions always; for a 2-D latent, the latent map and the
decoded manifold, on the same axes."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402


def tile(images: np.ndarray, columns: int) -> np.ndarray:
    """Lay ``[N, H, W(, 1)]`` images out as one ``[rows*H, columns*W]`` picture."""
    images = np.asarray(images).reshape(len(images), *np.asarray(images).shape[1:3])
    count, height, width = images.shape
    rows = -(-count // columns)
    canvas = np.zeros((rows * height, columns * width), dtype=images.dtype)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        canvas[row * height : (row + 1) * height, column * width : (column + 1) * width] = image
    return canvas


def _save_picture(canvas: np.ndarray, path: Path, title: str) -> None:
    figure, axis = plt.subplots(figsize=(canvas.shape[1] / 40, canvas.shape[0] / 40 + 0.4))
    axis.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0)
    axis.set_title(title, fontsize=9)
    axis.axis("off")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def save_samples(probs: np.ndarray, path: Path, columns: int = 8) -> None:
    """Decoded samples z ~ N(0, I), shown as Bernoulli means."""
    _save_picture(tile(probs, columns), path, "samples: z ~ N(0, I), Bernoulli means")


def save_reconstructions(originals: np.ndarray, reconstructions: np.ndarray, path: Path) -> None:
    """Originals on odd rows, their reconstructions right under them."""
    columns = 10
    rows = []
    for start in range(0, len(originals), columns):
        rows.append(originals[start : start + columns])
        rows.append(reconstructions[start : start + columns])
    _save_picture(
        tile(np.concatenate(rows), columns), path, "test images (odd rows) and reconstructions"
    )


# z values marked on both latent pictures' axes.
Z_TICKS = (-2.0, -1.0, 0.0, 1.0, 2.0)


def prior_cdf(z: np.ndarray) -> np.ndarray:
    """Φ(z), the standard normal CDF: where ``z`` sits on the pictures' unit-square axes."""
    return np.vectorize(NormalDist().cdf, otypes=[np.float64])(np.asarray(z, np.float64))


def _z_axes(axis: plt.Axes) -> None:
    """Unit-square axes ticked in z, shared by the latent map and the manifold.

    As in Kingma & Welling's manifold figure, position u on an axis stands for
    z = Φ⁻¹(u): equal lengths hold equal prior mass, so decoded cells can be laid out
    evenly and both pictures put every z at the same place.
    """
    ticks = prior_cdf(np.array(Z_TICKS))
    axis.set_xlim(0.0, 1.0)
    axis.set_ylim(0.0, 1.0)
    axis.set_xticks(ticks, [f"{z:g}" for z in Z_TICKS])
    axis.set_yticks(ticks, [f"{z:g}" for z in Z_TICKS])
    axis.set_xlabel("z[0]  (axis spaced by Φ(z): equal lengths, equal prior mass)")
    axis.set_ylabel("z[1]")
    axis.set_aspect("equal")


def latent_map_figure(z_mean: np.ndarray, labels: np.ndarray) -> plt.Figure:
    """Posterior means of held-out images in a 2-D latent space, coloured by class."""
    figure, axis = plt.subplots(figsize=(7.5, 6.5))
    u = prior_cdf(z_mean[:, :2])
    points = axis.scatter(u[:, 0], u[:, 1], c=labels, cmap="tab10", s=2, alpha=0.7)
    figure.colorbar(points, ax=axis, ticks=range(10), label="label", shrink=0.8)
    _z_axes(axis)
    axis.set_title("latent map of the test set (posterior means)")
    return figure


def save_latent_map(z_mean: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """The latent map as a PNG, on the same axes as :func:`save_manifold`."""
    figure = latent_map_figure(z_mean, labels)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def manifold_grid(size: int = 20) -> np.ndarray:
    """Latent points z = Φ⁻¹(u) at the centres of a ``size`` × ``size`` unit-square grid.

    Each cell covers an equal share of the prior, and the grid is the one the
    pictures' axes draw: cell centres at u = (i + ½) / size.
    """
    centres = (np.arange(size) + 0.5) / size
    quantiles = np.array([NormalDist().inv_cdf(p) for p in centres])
    # Rows go top to bottom with decreasing z[1], like a plot's y axis.
    return np.array([[x, y] for y in quantiles[::-1] for x in quantiles], dtype=np.float32)


def manifold_figure(probs: np.ndarray) -> plt.Figure:
    """The decoded images of :func:`manifold_grid`, each drawn over its own cell."""
    size = int(round(np.sqrt(len(probs))))
    figure, axis = plt.subplots(figsize=(7.5, 6.5))
    axis.imshow(
        tile(probs, size),
        cmap="gray",
        vmin=0.0,
        vmax=1.0,
        extent=(0.0, 1.0, 0.0, 1.0),
        interpolation="nearest",
    )
    _z_axes(axis)
    axis.set_title(f"decoded manifold: z = Φ⁻¹(u) on a {size}×{size} grid of the unit square")
    return figure


def save_manifold(probs: np.ndarray, path: Path) -> None:
    """The manifold as a PNG, on the same axes as :func:`save_latent_map`."""
    figure = manifold_figure(probs)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


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
    save_samples(decode_probs(vae, z), run_dir / "samples.png")
    written.append(run_dir / "samples.png")

    originals = test_inputs[:30]
    reconstructions = vae.predict(originals, verbose=0)
    save_reconstructions(originals, reconstructions, run_dir / "reconstructions.png")
    written.append(run_dir / "reconstructions.png")

    if vae.latent_dim == 2:
        z_mean, _ = vae.encoder.predict(test_inputs, batch_size=500, verbose=0)
        save_latent_map(z_mean, test_labels, run_dir / "latent_map.png")
        save_manifold(decode_probs(vae, manifold_grid()), run_dir / "manifold.png")
        written += [run_dir / "latent_map.png", run_dir / "manifold.png"]
    return written
