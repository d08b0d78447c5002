"""Where a drawn or uploaded image's score falls: the test set's distribution of
log-likelihood scores, recorded by the export in the decoder's manifest.

A score in nats means little alone (it depends on the dataset and on the model); its
rank among the scores of real test images says whether an input looks like the data.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from vae_contract.repository import MANIFEST_FILE

KEY = "score_reference"
BINS = 40
QUANTILES = (0.01, 0.05, 0.5, 0.95, 0.99)
SEED = 0  # the export's: a reference can be reproduced exactly


def build(log_likelihood: np.ndarray, dataset: str, k: int, seed: int) -> dict:
    """The histogram, mean and quantiles of ``log_likelihood`` (nats), with how it was made."""
    values = np.asarray(log_likelihood, np.float64)
    counts, edges = np.histogram(values, bins=BINS)
    return {
        "dataset": dataset,
        "images": int(len(values)),
        "k": k,
        "seed": seed,
        "bin_edges": [round(float(e), 4) for e in edges],
        "counts": [int(c) for c in counts],
        "mean": round(float(values.mean()), 4),
        "quantiles": {str(q): round(float(np.quantile(values, q)), 4) for q in QUANTILES},
    }


@functools.lru_cache(maxsize=64)
def read_reference(version_dir: Path) -> dict | None:
    """The reference recorded in ``version_dir``'s manifest, or None (none, or unreadable:
    the manifest was verified when the version was loaded, so None means "not recorded")."""
    try:
        manifest = json.loads((Path(version_dir) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    found = manifest.get(KEY) if isinstance(manifest, dict) else None
    return found if isinstance(found, dict) else None
