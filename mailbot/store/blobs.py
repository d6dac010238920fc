"""Content-addressed files on disk: raw mails and attachments, written before anything else.

A file is written to a temporary name of its own, fsynced and renamed, so a crash leaves
either the whole file or none; the same bytes always land at the same path.  Several
processes (an MTA running `mailbot ingest` in parallel) or threads writing the same bytes
at once each write their own temporary file, and the last rename wins with identical
content.  Files are created 0600 in 0700 directories: they hold customers' mail.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def put(root: Path, payload: bytes | Iterable[bytes], sha256: str | None = None,
        sync: bool = True) -> str:
    """Store ``payload`` under its SHA-256 in ``root``; return the hash.

    ``payload`` may be an iterable of chunks (a large attachment, decoded as it is written,
    never whole in memory); then ``sha256`` must be given.
    ``sync=False`` leaves the fsync to a later :func:`sync_filesystem` for a whole batch.
    An OSError (a full disk, an unwritable directory) leaves no partial file behind.
    """
    digest = sha256 or hashlib.sha256(payload).hexdigest()
    target = path_for(root, digest)
    if target.exists():
        if sync:  # perhaps written by a batch that has not synced yet
            fsync(target)
        return digest
    _make_dirs(root, target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{digest}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in (payload,) if isinstance(payload, bytes) else payload:
                handle.write(chunk)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        fsync(target.parent)  # the rename itself
    return digest


def _make_dirs(root: Path, folder: Path) -> None:
    """``root`` and ``folder`` below it, each created 0700 where missing."""
    for path in (root, folder):
        if not path.is_dir():
            path.mkdir(mode=0o700, parents=True, exist_ok=True)


def fsync(path: Path) -> None:
    """Flush one file or directory (its entries: a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_filesystem(path: Path) -> None:
    """Flush everything written to the file system holding ``path`` (one group commit).

    Uses Linux's syncfs(2) for just that file system; elsewhere falls back to sync(2).
    An error the file system reports on writing back (EIO, ENOSPC) raises OSError: what
    was written since the last sync may not be on disk.
    """
    syncfs = getattr(_libc(), "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            code = ctypes.get_errno()
            if code not in (errno.ENOSYS, errno.EPERM):  # not offered here: sync everything
                raise OSError(code, f"syncfs {path}: {os.strerror(code)}")
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
    if not is_digest(sha256):
        raise ValueError("not a sha256 hex digest")
    return root / sha256[:2] / sha256


def is_digest(name: str) -> bool:
    """Whether ``name`` is a sha256 hex digest: the only names files have in these folders."""
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)
