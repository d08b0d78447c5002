"""The one reader of exported ONNX models: the service, LocalVae, ``evaluate --onnx`` and export.

:mod:`vae_contract.repository` finds the complete versions and checks each file against
its manifest (no onnxruntime needed); here a checked version becomes two
:class:`OnnxModel` sessions, built from the very bytes that were hashed, and the graphs
are held to the contract: the encoder folder holds a network that takes images, the
decoder folder one that takes ``z``, and their latent sizes agree with each other and
with the manifests. Every failure is a :class:`~vae_contract.ModelRepositoryError` of one
line naming the file and the fix; ``python -m serving`` exits 2 with it.

A *variant* (``python -m serving --variant int8``) is read the same way from its own
folders (``vae_encoder_int8/N``...) and loaded under the contract's network names, so that
every route, check and client serves it as the VAE; its graphs say which build they are
(metadata ``keras_vae.variant``, shown by ``GET /v1/models/<name>/metadata``).

Hashing costs little next to building the sessions: see README, "Export" for the figure.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vae_contract import DECODER, ENCODER, FLOAT32, NETWORKS, ModelRepositoryError
from vae_contract.repository import REEXPORT, OnnxVersion, scan_onnx, verify
from vae_runtime.engine import OnnxModel

log = logging.getLogger(__name__)


def open_version(version: OnnxVersion, threads: int = 1) -> dict[str, OnnxModel]:
    """Both networks of a complete version, verified, as onnxruntime sessions."""
    verified = verify(version)
    models = {
        network: OnnxModel(
            version.model_path(network),
            network,
            version.number,
            threads,
            content=verified.models[network],
        )
        for network in NETWORKS
    }
    for model in (models[ENCODER], models[DECODER]):
        if model.latent_dim != verified.latent_dim:
            raise ModelRepositoryError(
                f"cannot load {model.path}: its graph has latent size {model.latent_dim}, "
                f"its manifest {verified.latent_dim}; {REEXPORT}"
            )
    return models


def load(
    repo: str | Path, version: int | None = None, threads: int = 1, variant: str = FLOAT32
) -> dict[str, OnnxModel]:
    """Both networks of ``version``, or of the latest complete version when None.

    Newer versions passed over because they are incomplete are logged, one line each.
    """
    found = scan_onnx(repo, variant)
    chosen = found.choose(version)
    for line in found.warnings(above=chosen.number) if version is None else []:
        log.warning(line)
    return open_version(chosen, threads)


def load_all(
    repo: str | Path, threads: int = 1, variant: str = FLOAT32
) -> dict[str, dict[int, OnnxModel]]:
    """Every complete version of both networks, ``{network: {version: model}}``.

    One damaged version refuses the whole start-up: a service that quietly served fewer
    versions would hide what happened to the files. Incomplete ones are logged.
    """
    found = scan_onnx(repo, variant)
    for line in found.warnings():
        log.warning(line)
    models: dict[str, dict[int, OnnxModel]] = {network: {} for network in NETWORKS}
    for number, version in sorted(found.complete.items()):
        for network, model in open_version(version, threads).items():
            models[network][number] = model
    return models
