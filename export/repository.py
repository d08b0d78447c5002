"""The model repository: integer versions, published whole, never overwritten.

Layout (TF Serving reads ``tf/``, Triton's ONNX Runtime backend and ``serving/`` read ``onnx/``)::

    <repo>/tf/vae_encoder/<version>/saved_model.pb, variables/, assets.extra/, manifest.json
    <repo>/tf/vae_decoder/<version>/...
    <repo>/onnx/vae_encoder/<version>/model.onnx, manifest.json
    <repo>/onnx/vae_decoder/<version>/...
    <repo>/onnx/vae_encoder_int8/<version>/...  an int8 variant of that version, published
    <repo>/onnx/vae_decoder_int8/<version>/...  later, the same way (export/quantize.py)
    <repo>/.staging-*/   exports in progress (or killed: see below); no server reads them

**Publishing.** An export is built in a hidden staging folder beside these and checked;
only then are its four version folders renamed into place, in :data:`PUBLISH_ORDER`: both
SavedModels, then both ONNX graphs. Each rename is atomic (one file system), so no reader
ever sees a half-written *folder*; but four renames are not one, so what a reader can see
of a version being published, or of one whose export was killed between two renames, is
a prefix of that order:

- ``serving/``, ``LocalVae`` and ``evaluate --onnx`` (:mod:`vae_contract.repository`) use
  a version only once both ONNX folders exist, and check that their manifests come from
  one export. The ONNX folders are renamed last, so a version they use is whole in both
  formats, and one that a kill left behind is never served.
- TF Serving and Triton read the folders directly and load the highest version of each
  model on their own. While a version is published they may, for a few microseconds, find
  the new encoder but not yet the new decoder; their next poll finds both. After a kill
  between the two renames of a format they keep such a mixed pair until the next export
  removes the partial version (below).

**Cleaning up after a killed export.** Every export holds an exclusive ``flock`` on its
staging folder for as long as it lives; the kernel releases it when the process dies,
however it dies. The next export, before it stages anything, locks the repository folder
(the same lock guards publishing) and removes every staging folder it can lock: those no
live export holds. If that export was killed while publishing
(its staging folder records the version and its export id, written before the first
rename), the folders it had already renamed into place are removed too, unless all four
made it (then the version is complete and stays). Only folders whose manifest carries that
export id are touched, so nothing another export or a person put there is removed. Its
number is not given out again by that export, since a TF Serving client may have seen it.
A plain kill outside publishing leaves only a staging folder: 6-11 MB, removed the same way.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from keras_vae.errors import KerasVaeError
from vae_contract import (
    DECODER,
    ENCODER,
    MANIFEST_FILE,
    NETWORKS,
    ONNX_DIR,
    TF_DIR,
    VARIANTS,
    model_name,
)

FORMATS = (TF_DIR, ONNX_DIR)
# The ONNX folders last: the service's reader sees a version only once it is whole.
PUBLISH_ORDER = tuple((fmt, network) for fmt in FORMATS for network in (ENCODER, DECODER))
STAGING_PREFIX = ".staging-"
PUBLISHING = "publishing.json"


def version_dirs(repo: Path, version: int) -> dict[tuple[str, str], Path]:
    """Where each (format, network) of ``version`` lives, relative to ``repo``."""
    return {(fmt, network): Path(fmt) / network / str(version) for fmt, network in PUBLISH_ORDER}


def variant_dirs(version: int, variant: str) -> dict[tuple[str, str], Path]:
    """Where the ONNX folders of a variant of ``version`` live, relative to the repository."""
    return {
        (ONNX_DIR, network): Path(ONNX_DIR) / model_name(network, variant) / str(version)
        for network in (ENCODER, DECODER)
    }


def existing_versions(repo: Path) -> set[int]:
    """Every version number with at least one folder: partial ones count, never reused.

    A variant's folders count too: a number they hold stays theirs.
    """
    found = set()
    names = [model_name(network, variant) for variant in VARIANTS for network in NETWORKS]
    for fmt in FORMATS:
        for name in names:
            folder = repo / fmt / name
            if folder.is_dir():
                found.update(
                    int(p.name) for p in folder.iterdir() if p.name.isascii() and p.name.isdigit()
                )
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
def _locked(folder: Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on ``folder`` itself; False if another process holds it.

    Locking the folder rather than a file in it leaves nothing behind, and the kernel
    drops the lock when the holder dies, however it dies.
    """
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _export_id(folder: Path) -> str | None:
    try:
        return json.loads((folder / MANIFEST_FILE).read_text()).get("export_id")
    except (OSError, ValueError, AttributeError):
        return None


def _roll_back(repo: Path, stage: Path) -> list[str]:
    """Remove what a killed export had published of an incomplete version; say what."""
    try:
        record = json.loads((stage / PUBLISHING).read_text())
        version, export_id = int(record["version"]), str(record["export_id"])
        # A variant's publishing lists its own folders; a plain export's are version_dirs.
        relatives = [Path(p) for p in record.get("folders") or version_dirs(repo, version).values()]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # it never began to publish
    ours = [repo / relative for relative in relatives if _export_id(repo / relative) == export_id]
    if len(ours) == len(relatives):
        return []  # killed after its last rename: a complete version
    for index, folder in enumerate(reversed(ours)):  # the ONNX ones first, as readers want
        os.rename(folder, stage / f"rolled-back-{index}")  # atomic: no half-deleted folder
    return [f"removed {folder} (version {version} was only partly published)" for folder in ours]


def remove_stale(repo: Path) -> list[str]:
    """Remove staging folders of dead exports and what they half-published; say what.

    Call with the repository locked, so that no export stages or publishes meanwhile.
    """
    notes = []
    for stage in sorted(repo.glob(STAGING_PREFIX + "*")):
        if not stage.is_dir():
            continue
        with _locked(stage, blocking=False) as free:
            if not free:
                continue  # a live export's
            notes += _roll_back(repo, stage)
            size = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())
            shutil.rmtree(stage, ignore_errors=True)
            notes.append(f"removed {stage} ({size / 1e6:.1f} MB) left by a killed export")
    return notes


@contextmanager
def staging(repo: Path) -> Iterator[Path]:
    """A private folder inside ``repo`` (same file system), removed whatever happens.

    It stays locked until it is removed, so a later export can tell it from one a killed
    export left behind; those, and what they half-published, are removed first (printed,
    one line each).
    """
    try:
        repo.mkdir(parents=True, exist_ok=True)
        with _locked(repo):
            for note in remove_stale(repo):
                print(note, flush=True)
            folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=repo))
            # Locked before the repository is unlocked: no one can see it unheld.
            held = ExitStack()
            held.enter_context(_locked(folder))
    except OSError as error:
        raise KerasVaeError(
            f"cannot write to the model repository {repo} ({error.strerror}); "
            "choose another --repo or fix its permissions"
        ) from None
    with held:
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def publish(
    stage: Path,
    repo: Path,
    version: int,
    export_id: str,
    targets: dict[tuple[str, str], Path] | None = None,
) -> list[Path]:
    """Rename every staged version folder into the repository; refuse to overwrite.

    ``export_id`` is the one in the staged manifests. It is recorded in the staging folder,
    with the folders to rename, before the first rename, so that if this process is killed
    before the last one, the next export can tell which folders to remove. An exception
    (Ctrl-C included) between renames moves the published folders back at once.
    ``targets``: the folders, in renaming order (default: :func:`version_dirs`, in
    :data:`PUBLISH_ORDER`; a variant passes :func:`variant_dirs`).
    """
    targets = targets or version_dirs(repo, version)
    published: list[tuple[Path, Path]] = []
    with _locked(repo):
        for relative in targets.values():
            if (repo / relative).exists():
                raise KerasVaeError(f"{repo / relative} appeared meanwhile; export again")
        folders = [str(relative) for relative in targets.values()]
        record = {"version": version, "export_id": export_id, "folders": folders}
        (stage / PUBLISHING).write_text(json.dumps(record) + "\n")
        try:
            for relative in targets.values():
                source, target = stage / relative, repo / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(source, 0o755)  # mkdtemp's 0700 would hide it from a server user
                os.rename(source, target)
                published.append((source, target))
        except BaseException:
            for source, target in reversed(published):
                os.rename(target, source)
            raise
    return [target for _, target in published]
