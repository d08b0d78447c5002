"""The names and shapes other teams rely on (see ENGINEERING.md, "Contracts").

Defined once, importable without TensorFlow or onnxruntime: training, export,
evaluation, the service and its client all read them from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENCODER = "vae_encoder"
DECODER = "vae_decoder"
NETWORKS = (ENCODER, DECODER)
SIGNATURE = "serving_default"
IMAGE_SHAPE = (28, 28, 1)

IMAGES, Z = "images", "z"
Z_MEAN, Z_LOG_VAR = "z_mean", "z_log_var"
PROBS, LOGITS = "probs", "logits"
INPUTS = {ENCODER: IMAGES, DECODER: Z}
OUTPUTS = {ENCODER: (Z_MEAN, Z_LOG_VAR), DECODER: (PROBS, LOGITS)}

# Model repository layout: <repo>/onnx/<network>/<version>/model.onnx (Triton's layout)
# and <repo>/tf/<network>/<version>/saved_model.pb (TF Serving's).
ONNX_DIR, TF_DIR = "onnx", "tf"
ONNX_FILE = "model.onnx"


def input_shape(network: str, latent_dim: int) -> list[int | None]:
    """Input shape with a dynamic (None) batch dimension."""
    return [None, *IMAGE_SHAPE] if network == ENCODER else [None, latent_dim]


def output_shapes(network: str, latent_dim: int) -> dict[str, list[int | None]]:
    if network == ENCODER:
        return {name: [None, latent_dim] for name in OUTPUTS[ENCODER]}
    return {name: [None, *IMAGE_SHAPE] for name in OUTPUTS[DECODER]}


class ModelRepositoryError(Exception):
    """The model repository is missing, incomplete, or lacks the asked-for version."""


def onnx_versions(repo: str | Path) -> dict[str, dict[int, Path]]:
    """Every exported version of both networks: ``{network: {version: model.onnx path}}``."""
    root = Path(repo) / ONNX_DIR
    if not root.is_dir():
        raise ModelRepositoryError(
            f"no ONNX model repository at {root}; run `make export` or pass --repo"
        )
    found: dict[str, dict[int, Path]] = {}
    for network in NETWORKS:
        folder = root / network
        versions = {
            int(p.name): p / ONNX_FILE
            for p in (folder.iterdir() if folder.is_dir() else [])
            if p.name.isascii() and p.name.isdigit() and (p / ONNX_FILE).is_file()
        }
        if not versions:
            raise ModelRepositoryError(
                f"{folder} holds no <version>/{ONNX_FILE}; run `make export` or pass --repo"
            )
        found[network] = versions
    return found


def choose_version(network: str, versions: Mapping[int, Any], version: int | None) -> int:
    """``version``, or the latest when None; an error that lists the versions there are."""
    if version is None:
        return max(versions)
    if version not in versions:
        raise ModelRepositoryError(
            f"{network} has no version {version}; versions: {sorted(versions)}"
        )
    return version
