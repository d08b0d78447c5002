"""Held-out figures of a trained run: ``python -m keras_vae.evaluate [RUN_DIR]``.

Reports, on the test split binarized once with a fixed seed:
- the test ELBO (nats per image; higher is better) and its two terms;
- the importance-weighted test NLL with K samples (Burda et al.; lower is better),
  the number of active latent units, computed by :mod:`keras_vae.iwae`.
With ``--onnx REPO`` the NLL is computed from the exported ONNX encoder and decoder
instead, with onnxruntime, so what is deployed is what is measured.
Everything is recorded in the run's ``metrics.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from keras_vae.data import HELD_OUT_SEED
from keras_vae.errors import KerasVaeError, run_cli
from keras_vae.iwae import Decode, Encode, evaluate_likelihood
from keras_vae.runs import MODEL_FILE, resolve_run, update_metrics
from vae_contract import DECODER, ENCODER, INPUTS, LOGITS, OUTPUTS


def evaluate_elbo(vae, inputs: np.ndarray, batch_size: int = 500) -> dict:
    """Test ELBO, reconstruction and KL, averaged per image; repeatable for given weights."""
    from keras_vae.data import evaluation_dataset

    results = vae.evaluate(evaluation_dataset(inputs, batch_size), verbose=0, return_dict=True)
    return {
        "test_elbo": float(results["elbo"]),
        "test_reconstruction": float(results["reconstruction"]),
        "test_kl": float(results["kl"]),
        "test_images": int(len(inputs)),
        "test_binarization_seed": HELD_OUT_SEED,
    }


def keras_networks(vae) -> tuple[Encode, Decode]:
    """The VAE's encoder and decoder as functions on numpy arrays."""

    def encode(x):
        z_mean, z_log_var = vae.encoder.predict_on_batch(x)
        return np.asarray(z_mean), np.asarray(z_log_var)

    def decode(z):
        return np.asarray(vae.decoder.predict_on_batch(z))

    return encode, decode


def onnx_networks(repo: str | Path, version: int | None = None) -> tuple[Encode, Decode, int]:
    """The exported ONNX graphs as functions on numpy arrays (onnxruntime, no TensorFlow).

    Loaded by the service's own loader, so what is measured is what would be served: the
    latest complete version by default, each file verified against its manifest.
    """
    from serving.errors import RepositoryError
    from serving.repository import load

    try:
        models = load(repo, version, threads=0)  # 0: onnxruntime's default, every core
    except RepositoryError as error:
        raise KerasVaeError(str(error)) from None
    encoder, decoder = models[ENCODER], models[DECODER]

    def encode(x):
        z_mean, z_log_var = encoder.session.run(list(OUTPUTS[ENCODER]), {INPUTS[ENCODER]: x})
        return z_mean, z_log_var

    def decode(z):
        return decoder.session.run([LOGITS], {INPUTS[DECODER]: z})[0]

    return encode, decode, encoder.version


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keras_vae.evaluate",
        description="Test ELBO and importance-weighted NLL of a trained run, into metrics.json.",
    )
    parser.add_argument("run_dir", nargs="?", help="run folder (default: the latest under --runs)")
    parser.add_argument("--runs", default="artifacts/runs", help="where run folders are")
    parser.add_argument("--data-dir", help="override the run's data dir (official .gz files)")
    parser.add_argument("--tfds-dir", help="override where TFDS keeps prepared data")
    parser.add_argument("--batch-size", type=int, default=500, help="for the ELBO")
    parser.add_argument(
        "--k", type=int, default=1000, help="importance samples per image (default 1000; 0 = skip)"
    )
    parser.add_argument("--iwae-seed", type=int, default=0, help="seed of the importance samples")
    parser.add_argument("--images", type=int, default=0, help="first N test images (0 = all)")
    parser.add_argument("--onnx", metavar="REPO", help="measure the exported ONNX graphs in REPO")
    parser.add_argument("--onnx-version", type=int, help="ONNX version (default: latest)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.k < 0 or args.images < 0:
        raise KerasVaeError("--k and --images must be >= 0")
    run_dir, config = resolve_run(args.run_dir, args.runs, args.data_dir, args.tfds_dir)

    from keras_vae.data import held_out_inputs, load_tfds_split

    images, _ = load_tfds_split(config.data, "test")
    if args.images:
        images = images[: args.images]
    inputs = held_out_inputs(images, config.data.binarization)
    print(f"run: {run_dir}")
    metrics: dict = {}
    if args.onnx:
        encode, decode, version = onnx_networks(args.onnx, args.onnx_version)
        prefix = "onnx_"
        print(f"networks: ONNX version {version} from {args.onnx}")
    else:
        from keras_vae.runs import load_vae

        vae = load_vae(run_dir / MODEL_FILE)
        metrics.update(evaluate_elbo(vae, inputs, args.batch_size))
        encode, decode = keras_networks(vae)
        prefix = ""
    if args.k:
        likelihood = evaluate_likelihood(inputs, encode, decode, args.k, seed=args.iwae_seed)
        metrics.update({prefix + key: value for key, value in likelihood.items()})
    # A partial evaluation is kept apart, so it never replaces the full test set's figures.
    update_metrics(
        run_dir, {f"first_{args.images}_test_images": metrics} if args.images else metrics
    )
    rows = [
        ("test ELBO", "test_elbo", "nats"),
        ("  reconstruction", "test_reconstruction", "nats"),
        ("  KL", "test_kl", "nats"),
        (f"test NLL (IWAE, K={args.k})", prefix + "test_nll", "nats"),
        ("  standard error", prefix + "test_nll_stderr", "nats"),
        ("active units", prefix + "active_units", f"of {metrics.get(prefix + 'latent_dim')}"),
        ("test images", prefix + "iwae_images" if args.onnx else "test_images", ""),
    ]
    for label, key, unit in rows:
        if key in metrics:
            value = metrics[key]
            shown = f"{value:>10.2f}" if isinstance(value, float) else f"{value:>10d}"
            print(f"{label:<26}{shown} {unit}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
