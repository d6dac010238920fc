"""Content-addressed files on disk: raw mails and attachments, written before anything else.

A file is written to a temporary name, fsynced and renamed, so a crash leaves
either the whole file or none; the same bytes always land at the same path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
from pathlib import Path


def put(root: Path, payload: bytes, sha256: str | None = None, sync: bool = True) -> str:
    """Store ``payload`` under its SHA-256 in ``root``; return the hash.

    ``sync=False`` leaves the fsync to a later :func:`sync_filesystem` for a whole batch.
    """
    digest = sha256 or hashlib.sha256(payload).hexdigest()
    target = path_for(root, digest)
    if target.exists():
        return digest
    if not target.parent.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{digest}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(payload)
        if sync:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, target)
    return digest


def sync_filesystem(path: Path) -> None:
    """Flush everything written to the file system holding ``path`` (one group commit).

    Uses Linux's syncfs(2) for just that file system; elsewhere falls back to sync(2).
    """
    syncfs = getattr(_libc(), "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


def get(root: Path, sha256: str) -> bytes:
    """The bytes stored under a hash."""
    return path_for(root, sha256).read_bytes()


def path_for(root: Path, sha256: str) -> Path:
    """Where the file with this hash lives; the hash is checked, never taken from mail."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("not a sha256 hex digest")
    return root / sha256[:2] / sha256
