"""``python -m benchmarks.anomaly``: how well the VAE's scores tell its own test set apart
from inputs it never saw (out-of-distribution detection), measured as AUROC.

Two models, each exported to its own repository: one trained on MNIST, one on
Fashion-MNIST. Each scores its own test images ("normal") against the other dataset's
test images and three synthetic corruptions of its own (pure noise, inverted, blank),
with the scores the service returns (``LocalVae.score`` = ``/v1/score``,
``LocalVae.reconstruct`` = ``/v1/reconstruct``) and two corrections of the likelihood
from the literature, because a likelihood model can give a simpler dataset a higher
likelihood than its own (Nalisnick et al., 2019): its AUROC then falls below 0.5.

Every set is presented as the model was trained: binarized once, with the fixed seed
evaluation uses (:func:`keras_vae.data.held_out_inputs`). Prints one JSON document and
writes it, with a histogram of every score, under ``artifacts/bench/``.
"""

from __future__ import annotations

import argparse
import bz2
import dataclasses
import json
import lzma
import math
import sys
import time
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from benchmarks.serving import describe_model, measured_model
from keras_vae.config import DATA_DIR_ENV, DataConfig
from keras_vae.errors import KerasVaeError, run_cli
from keras_vae.quiet import silence_libraries

DATASETS = ("mnist", "fashion_mnist")
DEFAULT_REPOS = {name: f"artifacts/anomaly/{name}" for name in DATASETS}
RUN_NAMES = {"mnist": "anomaly-mnist", "fashion_mnist": "anomaly-fashion"}
CORRUPTIONS = ("noise", "inverted", "blank")

# Every score is "higher = more normal"; an AUROC is the probability that a normal input
# scores above an anomalous one (ties count half): 0.5 is chance, below 0.5 the score
# prefers the anomalies.
SCORES = {
    "likelihood": "log p(x), the importance-weighted estimate with K samples "
    "(/v1/score log_likelihood), nats",
    "reconstruction": "log p(x|z) at the posterior mean (/v1/reconstruct reconstruction), nats",
    "typicality": "-|log p(x) - mean log p(x) of held-out training images|: too likely is as "
    "suspect as too unlikely (Nalisnick et al., 2019b, one input at a time)",
    "complexity": "log p(x) + L(x), L the length of x compressed losslessly (the protocol's "
    "compressor, pixels packed 8 per byte) in nats: a likelihood ratio against a generic "
    "compressor (Serra et al., 2020, 'input complexity')",
}

# Generic lossless compressors for L(x), at their strongest setting. Which one works best
# is an empirical matter (Serra et al. found FLIF > PNG > JPEG2000); on these binary images
# bz2 did (README, Anomaly detection).
# A 4 KiB dictionary holds a whole image: the same lengths as the preset's 64 MiB, which
# cost 60 ms per image to allocate.
LZMA_FILTER = {"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": 4096}
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "bz2": lambda data: bz2.compress(data, 9),
    "zlib": lambda data: zlib.compress(data, 9),
    "lzma": lambda data: lzma.compress(data, format=lzma.FORMAT_RAW, filters=[LZMA_FILTER]),
}


def auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """P(a normal score > an anomalous score) + P(tie) / 2: the Mann-Whitney U statistic
    over both set sizes, from average ranks (ties share their rank), so O(n log n)."""
    normal, anomalous = np.asarray(normal, np.float64), np.asarray(anomalous, np.float64)
    if not (len(normal) and len(anomalous)):
        raise ValueError("auroc needs at least one score in each set")
    values = np.concatenate([normal, anomalous])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    tied_rank = first + (counts + 1) / 2.0  # the mean of the 1-based ranks of each tie group
    ranks[order] = np.repeat(tied_rank, counts)
    u = ranks[: len(normal)].sum() - len(normal) * (len(normal) + 1) / 2.0
    return float(u / (len(normal) * len(anomalous)))


def corruptions(inputs: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Synthetic anomalies made from the normal inputs, same shape and pixel range [0, 1]:
    pure noise (every pixel on with probability 1/2), the inputs inverted, blank images."""
    inputs = np.asarray(inputs, np.float32)
    noise = np.random.default_rng(seed).random(inputs.shape, dtype=np.float32) < 0.5
    return {
        "noise": noise.astype(np.float32),
        "inverted": 1.0 - inputs,
        "blank": np.zeros_like(inputs),
    }


def compressed_nats(inputs: np.ndarray, compressor: str = "bz2") -> np.ndarray:
    """L(x): each image's length after lossless compression by ``compressor``, in nats.

    Binary images are packed 8 pixels per byte first (else as bytes of round(255 x)), so
    the compressor sees the image's information, not float padding. A compressor's fixed
    header adds the same constant to every score, which changes no AUROC."""
    compress = COMPRESSORS[compressor]
    flat = np.asarray(inputs).reshape(len(inputs), -1)
    binary = bool(np.isin(flat, (0.0, 1.0)).all())
    rows = np.packbits(flat > 0.5, axis=1) if binary else np.round(flat * 255).astype(np.uint8)
    return np.array([8 * math.log(2) * len(compress(row.tobytes())) for row in rows])


def score_inputs(
    vae, inputs: np.ndarray, k: int, seed: int, compressor: str = "bz2", batch_size: int = 100
) -> dict[str, np.ndarray]:
    """The service's two scores of every image, and L(x): ``likelihood`` (``vae.score``'s
    ``log_likelihood``, K samples) and ``reconstruction`` (``vae.reconstruct``'s, at the
    posterior mean), in batches; each batch's noise is seeded with ``seed``."""
    likelihood, reconstruction = [], []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        likelihood.append(vae.score(batch, k=k, seed=seed)["log_likelihood"])
        reconstruction.append(vae.reconstruct(batch)["reconstruction"])
    return {
        "likelihood": np.concatenate(likelihood).astype(np.float64),
        "reconstruction": np.concatenate(reconstruction).astype(np.float64),
        "compressed": compressed_nats(inputs, compressor),
    }


def with_corrections(raw: Mapping[str, np.ndarray], typical: float) -> dict[str, np.ndarray]:
    """Every score of :data:`SCORES` from the raw ones; ``typical`` is the mean log p(x)
    of held-out training images (never the test images being scored)."""
    return {
        "likelihood": raw["likelihood"],
        "reconstruction": raw["reconstruction"],
        "typicality": -np.abs(raw["likelihood"] - typical),
        "complexity": raw["likelihood"] + raw["compressed"],
    }


def evaluate_model(
    vae,
    normal: str,
    sets: Mapping[str, np.ndarray],
    reference: np.ndarray,
    k: int,
    seed: int,
    compressor: str = "bz2",
    log: Callable[[str], None] = lambda line: None,
) -> dict:
    """Score ``sets`` (``normal`` among them) and ``reference`` with one model, and the
    AUROC of ``normal`` against each other set, by every score.

    Returns ``{"reference", "sets": {name: {"images", "mean": {score: value}}}, "auroc":
    {name: {score: value}}, "scores": {name: {score: array}}}``; the arrays are for the
    plot and are left out of the JSON."""
    started = time.monotonic()
    typical = float(score_inputs(vae, reference, k, seed)["likelihood"].mean())
    seconds = time.monotonic() - started
    log(f"  reference: {len(reference)} held-out training images, {seconds:.0f} s")
    scores = {}
    for name, inputs in sets.items():
        started = time.monotonic()
        scores[name] = with_corrections(score_inputs(vae, inputs, k, seed, compressor), typical)
        log(f"  {name}: {len(inputs)} images, {time.monotonic() - started:.0f} s")
    return {
        "reference": {"images": int(len(reference)), "mean_log_likelihood": round(typical, 3)},
        "sets": {
            name: {
                "images": int(len(sets[name])),
                "mean": {score: round(float(v.mean()), 3) for score, v in by_score.items()},
            }
            for name, by_score in scores.items()
        },
        "auroc": {
            name: {
                score: round(auroc(scores[normal][score], scores[name][score]), 4)
                for score in SCORES
            }
            for name in sets
            if name != normal
        },
        "scores": scores,
    }


def recorded_data(repo: str | Path) -> dict:
    """The data section of the configuration the repository's latest model was trained
    with, as its manifest records it (empty for an export that recorded none)."""
    from vae_contract import ENCODER
    from vae_contract.repository import read_manifest, scan_onnx

    source = read_manifest(scan_onnx(repo).choose(), ENCODER).get("source_run") or {}
    return dict((source.get("config") or {}).get("data") or {})


def data_config(dataset: str, recorded: Mapping, data_dir: str | None, tfds_dir: str | None):
    """Where to read ``dataset`` from and how to binarize it: as the model was trained
    (its run's recorded binarization), from the data folder given here."""
    location = {"data_dir": data_dir} if data_dir else {}  # else DataConfig's: $KERAS_VAE_DATA_DIR
    return DataConfig(
        dataset=dataset,
        tfds_dir=tfds_dir,
        binarization=recorded.get("binarization", DataConfig.binarization),
        **location,
    )


def load_inputs(config: DataConfig, split: str, images: int, tail: bool = False) -> np.ndarray:
    """The first (or, with ``tail``, the last) ``images`` of a split, as model inputs."""
    from keras_vae.data import held_out_inputs, load_tfds_split

    pixels, _ = load_tfds_split(config, split)
    chosen = pixels[-images:] if tail else pixels[:images]
    return held_out_inputs(chosen, config.binarization)


def check_repository(dataset: str, repo: str | Path) -> dict:
    """The repository's model description, or a one-line refusal with the commands that
    make it: missing, or trained on another dataset."""
    run = RUN_NAMES[dataset]
    make = (
        f'`make train DATA_DIR=../shared/data ARGS="--dataset {dataset} --epochs 10 '
        f'--run-name {run}"` then `make export ARGS="artifacts/runs/{run} --repo {repo}"`'
    )
    from vae_contract.repository import ModelRepositoryError

    if not Path(repo).exists():
        raise KerasVaeError(f"no {dataset} model: {repo} does not exist; make one with {make}")
    try:
        model = measured_model(repo)
    except (ModelRepositoryError, OSError) as error:
        raise KerasVaeError(f"no usable model in {repo} ({error}); make one with {make}") from None
    if model["dataset"] != dataset:
        raise KerasVaeError(
            f"the model in {repo} was trained on {model['dataset']}, not {dataset}; pass the "
            f"repository of a {dataset} model, or make one with {make}"
        )
    return model


def model_sets(
    config: DataConfig, images: int, seed: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A model's sets, normal first: its own test images, the other dataset's, the
    corruptions of its own; and its reference: the last training images (the tail
    ``make train`` holds out for validation)."""
    (other,) = (name for name in DATASETS if name != config.dataset)
    normal = load_inputs(config, "test", images)
    sets = {
        config.dataset: normal,
        other: load_inputs(dataclasses.replace(config, dataset=other), "test", images),
        **corruptions(normal, seed),
    }
    return sets, load_inputs(config, "train", images, tail=True)


def report(directions: Mapping[str, dict], protocol: Mapping, seconds: float) -> dict:
    """The JSON document: what was measured, and per model its sets' mean scores and the
    AUROC of each pair (the score arrays stay out)."""
    return {
        "benchmark": "anomaly",
        "protocol": dict(protocol),
        "scores": SCORES,
        "models": {
            name: {key: value for key, value in result.items() if key != "scores"}
            for name, result in directions.items()
        },
        "seconds": round(seconds, 1),
    }


def plot(directions: Mapping[str, dict], path: Path) -> None:
    """One row per model, one panel per score: the distribution of each set's scores.

    The sets are hundreds of nats apart (noise) or near zero (blank), so the x axis is
    symmetric-logarithmic; bins are even on that axis and counts are fractions of a set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(directions), len(SCORES)
    figure, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for row, (name, result) in enumerate(directions.items()):
        for col, score in enumerate(SCORES):
            ax = axes[row][col]
            values = {label: by_score[score] for label, by_score in result["scores"].items()}
            edges = symlog_edges(np.concatenate(list(values.values())))
            for label, v in values.items():
                auc = result["auroc"].get(label, {}).get(score)
                normal = auc is None
                ax.hist(
                    v,
                    bins=edges,
                    weights=np.full(len(v), 1 / len(v)),
                    histtype="stepfilled" if normal else "step",
                    alpha=0.35 if normal else 1.0,
                    linewidth=1.4,
                    label=f"{label} (normal)" if normal else f"{label} (AUROC {auc:.2f})",
                )
            ax.set_xscale("symlog", linthresh=1.0)
            ax.set_title(f"{name} model: {score}", fontsize=10)
            ax.set_xlabel("score, nats (higher = more normal)", fontsize=8)
            ax.legend(fontsize=6.5, loc="upper left")
        axes[row][0].set_ylabel("fraction of the set")
    figure.suptitle(
        "\n".join(describe_model(result["model"]) for result in directions.values()), fontsize=8
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def symlog_edges(values: np.ndarray, bins: int = 80) -> np.ndarray:
    """Histogram edges evenly spaced in sign(v) log10(1 + |v|)."""
    transformed = np.sign(values) * np.log10(1 + np.abs(values))
    edges = np.linspace(transformed.min(), transformed.max() + 1e-9, bins + 1)
    return np.sign(edges) * (10 ** np.abs(edges) - 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.anomaly",
        description="AUROC of the VAE's scores, each model's test set against the other "
        "dataset's and synthetic corruptions; JSON on stdout and in --out, with a histogram.",
    )
    for name in DATASETS:
        parser.add_argument(
            f"--{name.replace('_', '-')}-repo",
            default=DEFAULT_REPOS[name],
            help=f"repository of the model trained on {name} (default: %(default)s)",
        )
    parser.add_argument(
        "--images", type=int, default=2000, help="test images per set (default: %(default)s)"
    )
    parser.add_argument(
        "--k", type=int, default=16, help="importance samples per image (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument(
        "--compressor",
        choices=sorted(COMPRESSORS),
        default="bz2",
        help="for the complexity-corrected score (default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir", help=f"folder with the official .gz files (default: ${DATA_DIR_ENV})"
    )
    parser.add_argument("--tfds-dir", help="where TFDS keeps prepared data (default: its own)")
    parser.add_argument(
        "--threads", type=int, default=0, help="onnxruntime threads (default 0: every core)"
    )
    parser.add_argument(
        "--out",
        default="artifacts/bench",
        help="for anomaly.json and anomaly.png (default: %(default)s)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's and TFDS's own lines and bars"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from serving.client import LocalVae

    args = build_parser().parse_args(argv)
    silence_libraries(args.verbose)  # before TensorFlow is imported
    if args.images < 1 or args.k < 1:
        raise KerasVaeError(f"--images and --k must be >= 1, got {args.images} and {args.k}")
    repos = {name: getattr(args, f"{name}_repo") for name in DATASETS}
    models = {name: check_repository(name, repo) for name, repo in repos.items()}
    started = time.monotonic()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    directions = {}
    for name, repo in repos.items():
        log(f"{name} model ({repo}), K={args.k}:")
        config = data_config(name, recorded_data(repo), args.data_dir, args.tfds_dir)
        sets, reference = model_sets(config, args.images, args.seed)
        vae = LocalVae(repo, threads=args.threads)
        result = evaluate_model(vae, name, sets, reference, args.k, args.seed, args.compressor, log)
        directions[name] = {"model": models[name], **result}
    protocol = {
        "images_per_set": args.images,
        "k": args.k,
        "seed": args.seed,
        "compressor": args.compressor,
        "inputs": "the first --images test images of each dataset, binarized once as the model "
        "was trained (held_out_inputs, seed 1); corruptions made from the model's own inputs",
        "reference": "the last --images training images (held out of training for validation)",
        "auroc": "P(normal score > anomalous score) + P(tie)/2; 0.5 is chance, below 0.5 the "
        "score prefers the anomalies",
    }
    document = report(directions, protocol, time.monotonic() - started)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "anomaly.json").write_text(json.dumps(document, indent=2) + "\n")
    plot(directions, out / "anomaly.png")
    print(json.dumps(document, indent=2))
    log(f"{document['seconds']} s; wrote {out / 'anomaly.json'} and {out / 'anomaly.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
