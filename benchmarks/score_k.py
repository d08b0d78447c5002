"""How many importance samples K a likelihood score needs: ``python -m benchmarks.score_k``.

For each K, the same held-out images are scored with several seeds (LocalVae.score, the
estimator behind /v1/score). It prints JSON: the mean estimate of log p(x) (it rises
towards log p(x) as K grows), the per-image spread between seeds (how much one score
moves if it is asked again), the gap to the largest K, and the time per image: what the
default K of /v1/score (``vae_contract.likelihood.DEFAULT_K``) rests on (README, "Scores,
reconstructions and interpolations", has the figures).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import time
from pathlib import Path

import numpy as np

from serving.client import LocalVae
from vae_contract import IMAGE_SHAPE

TEST_IMAGES = "t10k-images-idx3-ubyte.gz"


def test_images(data_dir: Path, count: int, seed: int = 1) -> np.ndarray:
    """The first ``count`` official MNIST test images, binarized with a fixed seed."""
    raw = gzip.decompress((data_dir / TEST_IMAGES).read_bytes())[16:]
    pixels = np.frombuffer(raw, np.uint8)[: count * math.prod(IMAGE_SHAPE)]
    grey = pixels.reshape(count, *IMAGE_SHAPE) / 255.0
    return (np.random.default_rng(seed).random(grey.shape) < grey).astype(np.float32)


def measure(vae: LocalVae, images: np.ndarray, ks: list[int], seeds: int) -> list[dict]:
    rows, reference = [], None
    for k in sorted(ks, reverse=True):
        started = time.perf_counter()
        runs = np.stack([vae.score(images, k=k, seed=s)["log_likelihood"] for s in range(seeds)])
        seconds = time.perf_counter() - started
        mean = float(runs.mean())
        reference = mean if reference is None else reference
        rows.append(
            {
                "k": k,
                "mean_log_likelihood": round(mean, 3),
                "gap_to_largest_k": round(reference - mean, 3),
                "per_image_spread_between_seeds": round(float(runs.std(axis=0).mean()), 3),
                "ms_per_image": round(1000 * seconds / (seeds * len(images)), 3),
            }
        )
    return sorted(rows, key=lambda row: row["k"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default="artifacts/models", help="model repository")
    parser.add_argument("--data-dir", default="../shared/data/mnist", help="MNIST .gz folder")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 10, 30, 100, 300, 1000])
    args = parser.parse_args()
    vae = LocalVae(args.repo)
    images = test_images(Path(args.data_dir), args.images)
    rows = measure(vae, images, args.k, args.seeds)
    print(
        json.dumps(
            {"repo": args.repo, "images": args.images, "seeds": args.seeds, "results": rows},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
