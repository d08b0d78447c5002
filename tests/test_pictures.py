"""The latent map and the manifold share their z axes, so the two pictures line up."""

from __future__ import annotations

from statistics import NormalDist

import matplotlib.pyplot as plt
import numpy as np

from keras_vae import pictures


def axes_fraction(axis: plt.Axes, points: np.ndarray) -> np.ndarray:
    """Where data points land inside the axes box, (0, 0) bottom left to (1, 1) top right."""
    return axis.transAxes.inverted().transform(axis.transData.transform(points))


def test_manifold_grid_is_the_inverse_gaussian_cdf_of_a_unit_square_grid():
    z = pictures.manifold_grid(5)
    centres = (np.arange(5) + 0.5) / 5
    u = pictures.prior_cdf(z)
    np.testing.assert_allclose(u[:5, 0], centres, atol=1e-6)  # first row: z[0] rises
    np.testing.assert_allclose(u[::5, 1], centres[::-1], atol=1e-6)  # rows: z[1] falls
    assert NormalDist().cdf(float(z[0, 0])) == u[0, 0]


def test_both_pictures_put_each_z_at_the_same_place_on_labelled_axes():
    size = 4
    z = pictures.manifold_grid(size)
    probs = np.random.default_rng(0).random((size * size, 28, 28, 1)).astype(np.float32)
    manifold = pictures.manifold_figure(probs)
    latent_map = pictures.latent_map_figure(z, np.arange(size * size) % 10)
    try:
        image_axis, map_axis = manifold.axes[0], latent_map.axes[0]
        # Cell (row r, column c) of the manifold is drawn around u = ((c+½)/n, 1-(r+½)/n).
        rows, columns = np.divmod(np.arange(size * size), size)
        cells = np.stack([(columns + 0.5) / size, 1 - (rows + 0.5) / size], axis=1)
        assert image_axis.images[0].get_extent() == [0.0, 1.0, 0.0, 1.0]
        on_manifold = axes_fraction(image_axis, cells)
        on_map = axes_fraction(map_axis, map_axis.collections[0].get_offsets())
        np.testing.assert_allclose(on_map, on_manifold, atol=1e-6)
        for axis in (image_axis, map_axis):
            assert axis.get_xlabel().startswith("z[0]") and axis.get_ylabel() == "z[1]"
            labels = [float(t.get_text().replace("\u2212", "-")) for t in axis.get_xticklabels()]
            assert labels == list(pictures.Z_TICKS)
            np.testing.assert_allclose(axis.get_xticks(), pictures.prior_cdf(np.array(labels)))
    finally:
        plt.close(manifold)
        plt.close(latent_map)
