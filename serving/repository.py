"""The exported ONNX models the service loads, found through the shared contract."""

from __future__ import annotations

from pathlib import Path

from serving.errors import RepositoryError
from vae_contract import ModelRepositoryError, onnx_versions


def discover(repo: str | Path) -> dict[str, dict[int, Path]]:
    """Every version of both networks, or a RepositoryError saying what is missing."""
    try:
        return onnx_versions(repo)
    except ModelRepositoryError as error:
        raise RepositoryError(str(error)) from None
