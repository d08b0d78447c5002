"""The importance-weighted estimator, on a model whose log p(x) is known in closed form."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_vae.iwae import (
    active_units,
    bernoulli_log_prob,
    evaluate_likelihood,
    iwae_bound,
    log_normal,
    log_weights,
)
from tests.conftest import REPO, run_module

# Linear-Gaussian model: z ~ N(0, I_2), x | z ~ N(W z + b, s2 I_3), so that
# x ~ N(b, W W^T + s2 I) and, W having orthogonal columns, the exact posterior
# is a diagonal Gaussian that a mean-field encoder can represent.
W = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
B = np.array([0.1, -0.2, 0.3])
S2 = 0.5
X = np.array([[0.5, 1.0, 0.0], [-1.0, 2.5, 1.0], [2.0, -3.0, -0.5], [0.0, 0.0, 0.0]])


def exact_log_px(x: np.ndarray) -> np.ndarray:
    cov = W @ W.T + S2 * np.eye(3)
    diff = x - B
    _, logdet = np.linalg.slogdet(cov)
    quad = np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff)
    return -0.5 * (3 * np.log(2 * np.pi) + logdet + quad)


def posterior(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    precision = np.eye(2) + W.T @ W / S2
    cov = np.linalg.inv(precision)
    mean = (x - B) @ W @ cov.T / S2
    return mean, np.log(np.broadcast_to(np.diag(cov), mean.shape))


def decode(z: np.ndarray) -> np.ndarray:
    return z.astype(np.float64) @ W.T + B


def gaussian_log_likelihood(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    return log_normal(x, mean, np.full_like(mean, np.log(S2)))


def wrong_posterior(x):
    mean, log_var = posterior(x)
    return mean + 0.6, log_var + 0.8


def estimates(encode, k: int, repeats: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array(
        [
            iwae_bound(log_weights(X, encode, decode, k, rng, gaussian_log_likelihood)[0])
            for _ in range(repeats)
        ]
    )  # [repeats, examples]


def test_exact_posterior_gives_exact_log_likelihood_for_any_k():
    for k in (1, 7, 100):
        values = estimates(posterior, k, repeats=3)
        np.testing.assert_allclose(
            values, np.broadcast_to(exact_log_px(X), values.shape), atol=1e-9
        )


def test_estimate_rises_to_log_px_with_k_and_stays_below_it():
    truth = exact_log_px(X)
    means = {
        k: estimates(wrong_posterior, k, repeats=200, seed=k).mean(axis=0) for k in (1, 10, 100)
    }
    means[2000] = estimates(wrong_posterior, 2000, repeats=20, seed=1).mean(axis=0)
    gaps = {k: truth - m for k, m in means.items()}
    assert np.all(gaps[1] > 0.3), gaps[1]  # a poor posterior: a loose ELBO
    assert np.all(gaps[1] > gaps[10]) and np.all(gaps[10] > gaps[100])
    assert np.all(gaps[100] > -0.02), gaps[100]  # never above log p(x) in expectation
    assert np.all(np.abs(gaps[2000]) < 0.03), gaps[2000]


def test_k_equal_one_is_the_single_sample_elbo():
    rng = np.random.default_rng(3)
    weights, mean, log_var = log_weights(
        X, wrong_posterior, decode, 1, rng, gaussian_log_likelihood
    )
    eps = np.random.default_rng(3).standard_normal((1, *mean.shape))[0]
    z = mean + np.exp(0.5 * log_var) * eps
    elbo = (
        gaussian_log_likelihood(X, decode(z))
        + log_normal(z, 0.0, np.zeros_like(z))
        - log_normal(z, mean, log_var)
    )
    np.testing.assert_allclose(iwae_bound(weights), elbo, atol=1e-12)
    # and its expectation is the closed-form ELBO: E_q log p(x|z) - KL(q || p)
    samples = estimates(wrong_posterior, 1, repeats=4000, seed=9).mean(axis=0)
    mu, lv = wrong_posterior(X)
    var = np.exp(lv)
    expected_ll = -0.5 * (
        3 * np.log(2 * np.pi * S2)
        + (np.sum((X - decode(mu)) ** 2, axis=1) + var @ np.sum(W**2, axis=0)) / S2
    )
    kl = 0.5 * np.sum(var + mu**2 - 1 - lv, axis=1)
    np.testing.assert_allclose(samples, expected_ll - kl, atol=0.1)


def test_bernoulli_log_prob_matches_the_training_loss_and_saturates_safely():
    from keras_vae.elbo import bernoulli_log_likelihood

    rng = np.random.default_rng(0)
    x = (rng.random((4, 28, 28, 1)) < 0.3).astype(np.float32)
    logits = rng.normal(0, 5, (4, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(
        bernoulli_log_prob(x, logits), np.asarray(bernoulli_log_likelihood(x, logits)), rtol=1e-5
    )
    assert np.isfinite(bernoulli_log_prob(np.ones((1, 2)), np.array([[-800.0, 800.0]]))).all()


def test_active_units_counts_dimensions_that_vary_across_data():
    rng = np.random.default_rng(0)
    means = np.stack([rng.normal(0, 1, 5000), rng.normal(0, 0.05, 5000), np.zeros(5000)], axis=1)
    assert active_units(means) == 1
    assert active_units(means, threshold=0.001) == 2


def test_keras_and_onnx_paths_agree_on_the_same_samples(trained_run, exported_repo, splits):
    from keras_vae.data import held_out_inputs
    from keras_vae.evaluate import keras_networks, onnx_networks
    from keras_vae.runs import load_vae

    images = held_out_inputs(splits.test_images[:100], "dynamic")
    keras_result = evaluate_likelihood(
        images, *keras_networks(load_vae(trained_run / "model.keras")), k=20, progress=False
    )
    encode, decode_onnx, version = onnx_networks(exported_repo)
    onnx_result = evaluate_likelihood(images, encode, decode_onnx, k=20, progress=False)
    assert version == 1
    assert abs(keras_result["test_nll"] - onnx_result["test_nll"]) < 0.05
    assert keras_result["active_units"] == onnx_result["active_units"]
    # IWAE >= ELBO on the same samples, for every image, by Jensen's inequality.
    assert keras_result["test_nll"] <= -keras_result["test_elbo_k_samples"]


def test_evaluate_cli_records_the_nll_and_runs_on_onnx(trained_run, exported_repo, tmp_path):
    # A copy (the shared run's metrics stay as training wrote them), under the run's own
    # name: evaluate --onnx takes only versions exported from the run it names.
    run = tmp_path / trained_run.name
    shutil.copytree(trained_run, run)
    trained = json.loads((run / "metrics.json").read_text())
    result = run_module("keras_vae.evaluate", str(run), "--k", "5", "--images", "200")
    assert result.returncode == 0, result.stderr
    assert "test NLL (IWAE, K=5)" in result.stdout and "active units" in result.stdout
    # Before the NLL starts: what is measured, how long it should take, how to get the
    # headline figure.
    expected = re.search(
        r"^IWAE NLL with K=5 on the first 200 of 10,000 test images: about (\d+) s ",
        result.stdout,
        re.M,
    )
    assert expected, result.stdout
    assert f'the headline protocol (K=1000, all images) is `make evaluate ARGS="{run} --full"`' in (
        result.stdout
    )
    recorded = json.loads((run / "metrics.json").read_text())
    # A partial evaluation is recorded apart: the full test set's ELBO is untouched.
    assert recorded["test_elbo"] == trained["test_elbo"]
    metrics = recorded["first_200_test_images"]
    assert metrics["iwae_k"] == 5 and metrics["iwae_images"] == 200
    assert 50 < metrics["test_nll"] < 550 and metrics["active_units"] <= 2
    onnx = run_module(
        "keras_vae.evaluate",
        str(run),
        "--k",
        "5",
        "--images",
        "200",
        "--onnx",
        str(exported_repo),
    )
    assert onnx.returncode == 0, onnx.stderr
    metrics = json.loads((run / "metrics.json").read_text())["first_200_test_images"]
    assert abs(metrics["onnx_test_nll"] - metrics["test_nll"]) < 0.05
    bad = run_module("keras_vae.evaluate", str(run), "--k", "-1")
    assert bad.returncode == 2 and "--k" in bad.stderr


def test_onnx_likelihood_needs_no_tensorflow(exported_repo, tmp_path):
    images = (np.random.default_rng(0).random((20, 28, 28, 1)) < 0.2).astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        class NoTensorFlow(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras", "tensorflow_datasets"):
                    raise ImportError(name)
        sys.meta_path.insert(0, NoTensorFlow())
        import numpy as np
        from keras_vae.evaluate import onnx_networks
        from keras_vae.iwae import evaluate_likelihood
        encode, decode, _ = onnx_networks({str(exported_repo)!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        print(evaluate_likelihood(x, encode, decode, k=4, progress=False)["test_nll"])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) > 0


@pytest.mark.parametrize("k", [0, -3])
def test_k_must_be_positive(k):
    with pytest.raises(ValueError, match="k must be >= 1"):
        evaluate_likelihood(np.zeros((1, 3)), posterior, decode, k=k)
