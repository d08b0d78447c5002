"""Write the servers' configuration files of a model repository, each atomically.

``<repo>/tf``: ``models.config`` (this host's absolute paths, or ``--base``),
``models.docker.config`` (``/models``), ``batching.config``; ``<repo>/onnx/<network>``:
Triton's ``config.pbtxt``. ``make export`` writes them after publishing each version;
``python -m export config`` writes them again, for a repository that moved or for the
path a server sees it at.
"""

from __future__ import annotations

from pathlib import Path

from export.tf_serving_config import (
    BATCHING_CONFIG,
    DOCKER_BASE,
    DOCKER_MODELS_CONFIG,
    MODELS_CONFIG,
    batching_config,
    models_config,
)
from export.triton_config import TRITON_CONFIG, model_config
from vae_contract import ENCODER, FLOAT32, NETWORKS, ONNX_DIR, TF_DIR, VARIANTS, model_name
from vae_contract.atomic import write_text


def write_tf_serving_configs(tf_root: Path, base: str | None = None) -> list[Path]:
    """``models.config`` with ``base`` (default: ``tf_root``'s absolute path), and the rest."""
    files = {
        MODELS_CONFIG: models_config(base or str(tf_root.resolve())),
        DOCKER_MODELS_CONFIG: models_config(DOCKER_BASE),
        BATCHING_CONFIG: batching_config(),
    }
    return [write_text(tf_root / name, text) for name, text in files.items()]


def write_triton_configs(onnx_root: Path, latent_dim: int) -> list[Path]:
    """One ``config.pbtxt`` beside the version folders of each network, and of each
    variant's build of it that has a version (``vae_encoder_int8``...)."""
    names = [
        (network, model_name(network, variant))
        for variant in VARIANTS
        for network in NETWORKS
        if variant == FLOAT32 or _has_versions(onnx_root / model_name(network, variant))
    ]
    return [
        write_text(onnx_root / name / TRITON_CONFIG, model_config(network, latent_dim, name))
        for network, name in names
    ]


def _has_versions(folder: Path) -> bool:
    """A folder Triton would load a model from: it holds a numbered version folder."""
    return folder.is_dir() and any(p.name.isdigit() and p.is_dir() for p in folder.iterdir())


def latest_latent_dim(repo: Path) -> int:
    """The latent size of the latest complete ONNX version: the one Triton loads."""
    from vae_contract.repository import read_manifest, scan_onnx

    version = scan_onnx(repo).choose()
    return int(read_manifest(version, ENCODER)["latent_dim"])


def write_deploy_configs(
    repo: str | Path, base: str | None = None, latent_dim: int | None = None
) -> list[Path]:
    """Every server configuration file of ``repo``; ``base``: where TF Serving sees ``tf/``."""
    repo = Path(repo)
    latent = latent_dim if latent_dim is not None else latest_latent_dim(repo)
    return write_tf_serving_configs(repo / TF_DIR, base) + write_triton_configs(
        repo / ONNX_DIR, latent
    )
