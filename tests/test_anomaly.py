"""The anomaly benchmark's parts (benchmarks/anomaly.py) on tiny sizes: the AUROC against
a pair count, the corruptions, the scores of a real exported model, the JSON and the plot,
and the refusals for a missing or wrong repository. The figures go in the README."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from benchmarks import anomaly


def pair_count(normal, anomalous) -> float:
    """The AUROC's definition, pair by pair."""
    pairs = list(itertools.product(normal, anomalous))
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)


def test_auroc_known_cases():
    assert anomaly.auroc([3.0, 4.0, 5.0], [0.0, 1.0]) == 1.0  # normal scores higher: found
    assert anomaly.auroc([0.0, 1.0], [3.0, 4.0, 5.0]) == 0.0  # the failure mode
    assert anomaly.auroc([2.0, 2.0], [2.0, 2.0, 2.0]) == 0.5  # all tied: chance
    assert anomaly.auroc([1.0, 2.0], [2.0, 0.0]) == 0.625  # a tie counts half


def test_auroc_matches_a_pair_count_with_ties():
    rng = np.random.default_rng(0)
    for size in ((1, 1), (7, 3), (40, 55)):
        normal = rng.integers(0, 6, size[0]).astype(float)  # few values: many ties
        anomalous = rng.integers(0, 6, size[1]).astype(float)
        assert anomaly.auroc(normal, anomalous) == pytest.approx(pair_count(normal, anomalous))
    with pytest.raises(ValueError):
        anomaly.auroc([], [1.0])


def test_corruptions_shapes_and_ranges():
    inputs = (np.random.default_rng(1).random((5, 28, 28, 1)) < 0.2).astype(np.float32)
    made = anomaly.corruptions(inputs, seed=0)
    assert set(made) == set(anomaly.CORRUPTIONS)
    for images in made.values():
        assert images.shape == inputs.shape and images.dtype == np.float32
        assert images.min() >= 0.0 and images.max() <= 1.0
    assert np.array_equal(made["inverted"], 1.0 - inputs)
    assert not made["blank"].any()
    assert set(np.unique(made["noise"])) == {0.0, 1.0}
    assert 0.45 < made["noise"].mean() < 0.55
    assert np.array_equal(made["noise"], anomaly.corruptions(inputs, seed=0)["noise"])


@pytest.mark.parametrize("compressor", sorted(anomaly.COMPRESSORS))
def test_compressed_length_orders_by_complexity(compressor):
    rng = np.random.default_rng(2)
    digit_like = np.zeros((1, 28, 28, 1), np.float32)
    digit_like[0, 8:20, 12:16] = 1.0
    sets = [np.zeros((1, 28, 28, 1)), digit_like, (rng.random((1, 28, 28, 1)) < 0.5) * 1.0]
    blank, stroke, noise = (anomaly.compressed_nats(x, compressor)[0] for x in sets)
    assert 0 < blank < stroke < noise
    noise_bytes = noise / (8 * math.log(2))
    assert noise_bytes == pytest.approx(round(noise_bytes))  # whole bytes, in nats
    assert noise_bytes >= 98  # 784 random bits do not compress


def test_scores_auroc_json_and_plot(local, splits, tmp_path):
    from keras_vae.data import held_out_inputs

    normal = held_out_inputs(splits.test_images[:12], "dynamic")
    sets = {
        "mnist": normal,
        "fashion_mnist": held_out_inputs(splits.train_images[:10], "dynamic"),  # stands in
        **anomaly.corruptions(normal, seed=0),
    }
    reference = held_out_inputs(splits.val_images[:8], "dynamic")
    result = anomaly.evaluate_model(local, "mnist", sets, reference, k=4, seed=0)

    assert set(result["auroc"]) == {"fashion_mnist", *anomaly.CORRUPTIONS}
    for pair in result["auroc"].values():
        assert set(pair) == set(anomaly.SCORES)
        assert all(0.0 <= value <= 1.0 for value in pair.values())
    assert result["auroc"]["noise"]["likelihood"] == 1.0  # even 3 epochs reject pure noise
    scores = result["scores"]["mnist"]
    assert all(len(values) == 12 for values in scores.values())
    assert (scores["likelihood"] < 0).all() and (scores["reconstruction"] < 0).all()
    typical = result["reference"]["mean_log_likelihood"]
    assert scores["typicality"] == pytest.approx(-abs(scores["likelihood"] - typical), abs=1e-3)
    again = anomaly.evaluate_model(local, "mnist", sets, reference, k=4, seed=0)
    assert again["auroc"] == result["auroc"]  # seeded

    model = {"dataset": "mnist", "models": ["e", "d"], "version": 1, "source_run": "small"}
    model |= {"architecture": "conv", "latent_dim": 2}
    directions = {"mnist": {"model": model, **result}}
    document = json.loads(json.dumps(anomaly.report(directions, {"k": 4}, 1.0)))
    assert set(document) == {"benchmark", "protocol", "scores", "models", "seconds"}
    assert set(document["models"]["mnist"]) == {"model", "reference", "sets", "auroc"}
    assert set(document["models"]["mnist"]["sets"]["blank"]["mean"]) == set(anomaly.SCORES)
    anomaly.plot(directions, tmp_path / "anomaly.png")
    assert (tmp_path / "anomaly.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_or_wrong_repository_is_one_line(exported_repo, tmp_path, capsys):
    from keras_vae.errors import run_cli

    missing = tmp_path / "nowhere"
    argv = ["--mnist-repo", str(missing), "--out", str(tmp_path)]
    assert run_cli(anomaly.main, argv) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and str(missing) in error
    assert "--run-name anomaly-mnist" in error and f"--repo {missing}" in error

    argv = ["--mnist-repo", str(exported_repo), "--fashion-mnist-repo", str(exported_repo)]
    assert run_cli(anomaly.main, [*argv, "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "trained on mnist, not fashion_mnist" in error
