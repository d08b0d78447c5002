"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Training (run folders, epoch backups), export (server configurations) and the service
may all write files something else reads while they change; they share this one helper,
kept here because every part may import ``vae_contract`` (it needs no TensorFlow).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

_partials = itertools.count()  # distinct temporary names within a process


@contextlib.contextmanager
def replacing(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new contents to, renamed onto ``path`` after.

    The temporary file sits in ``path``'s folder, since a rename is atomic only within one
    file system, and keeps ``path``'s suffixes, which Keras chooses the format from. If the
    block raises, it is removed and ``path`` is left as it was. ``durable`` also flushes the
    file to disk before the rename and the folder after it, so that a crash of the machine
    cannot leave the new name on data that never reached the disk.
    """
    path = Path(path)
    suffixes = "".join(path.suffixes)
    partial = path.with_name(f"partial-{os.getpid()}-{next(_partials)}{suffixes}")
    try:
        yield partial
        if durable:
            _fsync(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if durable:
        _fsync(path.parent)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, creating its folder, readable by every user.

    Every user: a server may run as another one than the process that writes its files.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as partial:
        partial.write_text(text, encoding="utf-8")
        os.chmod(partial, 0o644)
    return path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some file systems cannot sync a directory
            os.fsync(fd)
    finally:
        os.close(fd)
