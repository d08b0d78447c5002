"""Pictures of a trained VAE, as PNG files: what people would rather look at than read."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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


def save_latent_map(z_mean: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """Posterior means of held-out images in a 2-D latent space, coloured by class."""
    figure, axis = plt.subplots(figsize=(7, 6))
    points = axis.scatter(z_mean[:, 0], z_mean[:, 1], c=labels, cmap="tab10", s=2, alpha=0.7)
    figure.colorbar(points, ax=axis, ticks=range(10), label="label")
    axis.set_xlabel("z[0]")
    axis.set_ylabel("z[1]")
    axis.set_title("latent map of the test set (posterior means)")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def manifold_grid(size: int = 20) -> np.ndarray:
    """Latent points on Gaussian quantiles, so each cell covers equal prior mass."""
    quantiles = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, size)])
    # Rows go top to bottom with decreasing z[1], like a plot's y axis.
    return np.array([[x, y] for y in quantiles[::-1] for x in quantiles], dtype=np.float32)


def save_manifold(probs: np.ndarray, path: Path) -> None:
    """The decoded images of :func:`manifold_grid`, laid out as the grid."""
    size = int(round(np.sqrt(len(probs))))
    _save_picture(tile(probs, size), path, "decoded manifold over Gaussian quantiles of z")
