"""1 process vs N local workers on the same global batches: throughput and agreement.

``python -m benchmarks.distributed [--workers 2] [--train-size 16384] [--epochs 3]``
prints JSON: images/s of each (steady epochs, from each run's metrics.json) and the
per-epoch negative ELBO of both, with their relative differences.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(command: list[str]) -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def summary(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with open(run_dir / "history.csv") as stream:
        losses = [round(float(row["loss"]), 3) for row in csv.DictReader(stream)]
    return {
        "images_per_s": metrics["train_images_per_second"],
        "seconds_per_epoch": metrics["seconds_per_epoch"],
        "loss_per_epoch": losses,
        "test_elbo": round(metrics["test_elbo"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=16384)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-dir", default=os.environ.get("KERAS_VAE_DATA_DIR"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as out:
        flags = ["--train-size", str(args.train_size), "--epochs", str(args.epochs),
                 "--validation-size", "1000", "--output-dir", out]  # fmt: skip
        if args.data_dir:
            flags += ["--data-dir", args.data_dir]
        run([sys.executable, "-m", "keras_vae.train", *flags, "--run-name", "one"])
        run([sys.executable, "-m", "keras_vae.launch", "--workers", str(args.workers), "--",
             *flags, "--run-name", "many"])  # fmt: skip
        one, many = summary(Path(out) / "one"), summary(Path(out) / "many")
    report = {
        "train_images": args.train_size,
        "epochs": args.epochs,
        "cpus": os.cpu_count(),
        "one_process": one,
        f"{args.workers}_workers": many,
        "throughput_ratio": round(many["images_per_s"] / one["images_per_s"], 3),
        "loss_relative_difference_per_epoch": [
            round(abs(a - b) / a, 5)
            for a, b in zip(one["loss_per_epoch"], many["loss_per_epoch"], strict=True)
        ],
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
