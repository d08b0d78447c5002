"""Held-out figures of a trained run: ``python -m keras_vae.evaluate [RUN_DIR]``.

Reports the test-set ELBO (nats per image; higher is better) and its two
terms, computed on the test split binarized with a fixed seed, and records
them in the run's ``metrics.json``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from keras_vae.data import HELD_OUT_SEED
from keras_vae.errors import run_cli
from keras_vae.runs import MODEL_FILE, check_run_dir, latest_run, load_config, update_metrics


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keras_vae.evaluate",
        description="Report the test-set ELBO of a trained run and record it in metrics.json.",
    )
    parser.add_argument("run_dir", nargs="?", help="run folder (default: the latest under --runs)")
    parser.add_argument("--runs", default="artifacts/runs", help="where run folders are")
    parser.add_argument("--data-dir", help="override the run's data dir (official .gz files)")
    parser.add_argument("--tfds-dir", help="override where TFDS keeps prepared data")
    parser.add_argument("--batch-size", type=int, default=500)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run_dir = check_run_dir(args.run_dir) if args.run_dir else latest_run(args.runs)
    config = load_config(run_dir)
    if args.data_dir:
        config.data.data_dir = args.data_dir
    if args.tfds_dir:
        config.data.tfds_dir = args.tfds_dir

    from keras_vae.data import held_out_inputs, load_tfds_split
    from keras_vae.runs import load_vae

    vae = load_vae(run_dir / MODEL_FILE)
    images, _ = load_tfds_split(config.data, "test")
    metrics = evaluate_elbo(vae, held_out_inputs(images, config.data.binarization), args.batch_size)
    update_metrics(run_dir, metrics)
    print(f"run: {run_dir}")
    print(f"{'test ELBO':<22}{metrics['test_elbo']:>10.2f} nats")
    print(f"{'  reconstruction':<22}{metrics['test_reconstruction']:>10.2f} nats")
    print(f"{'  KL':<22}{metrics['test_kl']:>10.2f} nats")
    print(f"{'test images':<22}{metrics['test_images']:>10d}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
