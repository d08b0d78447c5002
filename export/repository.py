"""The model repository: integer versions, published atomically, never overwritten.

Layout (TF Serving reads ``tf/``, Triton's ONNX Runtime backend and ``serving/`` read ``onnx/``)::

    <repo>/tf/vae_encoder/<version>/saved_model.pb, variables/, assets.extra/, manifest.json
    <repo>/tf/vae_decoder/<version>/...
    <repo>/onnx/vae_encoder/<version>/model.onnx, manifest.json
    <repo>/onnx/vae_decoder/<version>/...

An export is built in a hidden staging folder beside these, checked, and only
then each version folder is renamed into place (a rename within one file system
is atomic), so a server never sees a half-written version.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from keras_vae.errors import KerasVaeError
from vae_contract import NETWORKS, ONNX_DIR, TF_DIR

FORMATS = (TF_DIR, ONNX_DIR)
STAGING_PREFIX = ".staging-"


def version_dirs(repo: Path, version: int) -> dict[tuple[str, str], Path]:
    """Where each (format, network) of ``version`` lives, relative to ``repo``."""
    return {
        (fmt, network): Path(fmt) / network / str(version)
        for fmt in FORMATS
        for network in NETWORKS
    }


def existing_versions(repo: Path) -> set[int]:
    found = set()
    for fmt in FORMATS:
        for network in NETWORKS:
            folder = repo / fmt / network
            if folder.is_dir():
                found.update(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    return found


def choose_version(repo: Path, requested: int | None) -> int:
    """The requested version if it is free, else the highest existing + 1."""
    versions = existing_versions(repo)
    if requested is None:
        return max(versions, default=0) + 1
    if requested < 1:
        raise KerasVaeError(f"--version must be a positive integer, got {requested}")
    if requested in versions:
        raise KerasVaeError(
            f"version {requested} already exists in {repo}; versions are never overwritten "
            f"(the next free one is {max(versions) + 1})"
        )
    return requested


@contextmanager
def staging(repo: Path) -> Iterator[Path]:
    """A private folder inside ``repo`` (same file system), removed whatever happens."""
    try:
        repo.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=repo))
    except OSError as error:
        raise KerasVaeError(
            f"cannot write to the model repository {repo} ({error.strerror}); "
            "choose another --repo or fix its permissions"
        ) from None
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def publish(stage: Path, repo: Path, version: int) -> list[Path]:
    """Rename every staged version folder into the repository; refuse to overwrite."""
    targets = version_dirs(repo, version)
    for relative in targets.values():
        if (repo / relative).exists():
            raise KerasVaeError(f"{repo / relative} appeared meanwhile; export again")
    published = []
    for relative in targets.values():
        target = repo / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(stage / relative, 0o755)  # mkdtemp's 0700 would hide it from a server user
        os.rename(stage / relative, target)
        published.append(target)
    return published
