"""Find the exported ONNX models: ``<repo>/onnx/<name>/<version>/model.onnx``."""

from __future__ import annotations

from pathlib import Path

from serving.errors import RepositoryError

MODELS = ("vae_encoder", "vae_decoder")
ONNX_FILE = "model.onnx"


def discover(repo: str | Path) -> dict[str, dict[int, Path]]:
    """Every version of both networks, or a RepositoryError saying what is missing."""
    root = Path(repo) / "onnx"
    if not root.is_dir():
        raise RepositoryError(
            f"no ONNX model repository at {root}; run `make export` or pass --repo"
        )
    found: dict[str, dict[int, Path]] = {}
    for name in MODELS:
        folder = root / name
        versions = {
            int(p.name): p / ONNX_FILE
            for p in (folder.iterdir() if folder.is_dir() else [])
            if p.name.isdigit() and (p / ONNX_FILE).is_file()
        }
        if not versions:
            raise RepositoryError(
                f"{folder} holds no <version>/{ONNX_FILE}; run `make export` or pass --repo"
            )
        found[name] = versions
    return found
