"""``manifest.json``: what a version folder holds, where it came from, how it was checked."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

# Readers verify what is written here: name and hash are defined once, with the reader.
from vae_contract.repository import MANIFEST_FILE, sha256

TOOLS = ("tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy")


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file under ``folder`` except the manifest itself."""
    return {
        str(path.relative_to(folder)): {"bytes": path.stat().st_size, "sha256": sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
