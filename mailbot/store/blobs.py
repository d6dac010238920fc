"""Raw mails and attachments, kept by their SHA-256: one :class:`Blobs` per kind, the
spool (:data:`SPOOL`, raw mails) and the attachment files (:data:`FILES`).

Where they are kept follows the store (:meth:`mailbot.store.Store.blobs`): beside an
SQLite store, files under the data directory (:class:`FileBlobs`); with a PostgreSQL store,
rows of that database (:class:`mailbot.store.pgblobs.PostgresBlobs`), so that no node keeps
anything of its own and any node serves any ticket's files.  Either way they are written
before anything refers to them, the same bytes always under the same name, and a big one
is written and read back a piece at a time (:meth:`Blobs.chunks`), never whole in memory.

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
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

SPOOL = "spool"  # raw mails, as they came
FILES = "files"  # attachments, decoded
# How much of a blob is read (and, in the database, stored) at a time.
CHUNK_BYTES = 1 << 20


class Blobs(Protocol):
    """The bytes of one kind (:data:`SPOOL` or :data:`FILES`) by their SHA-256.

    A hash that is not a SHA-256 hex digest raises ValueError (they come from the
    database, never from mail); bytes that are not kept raise FileNotFoundError.
    """

    def put(self, payload: bytes | Iterable[bytes], sha256: str | None = None,
            sync: bool = True) -> str:
        """Keep ``payload`` under its SHA-256 (given, for chunks); return the hash.

        Bytes kept already are not written again.  ``sync=False`` leaves making them
        durable to a later :meth:`sync` for a whole batch.
        """

    def get(self, sha256: str) -> bytes:
        """The bytes kept under a hash, whole (for a mail to read, a file to attach)."""

    def chunks(self, sha256: str) -> Iterator[bytes]:
        """The bytes kept under a hash, about :data:`CHUNK_BYTES` at a time (a download, an
        export); bytes that are not kept raise at once, not when the first chunk is due."""

    def size(self, sha256: str) -> int:
        """How many bytes are kept under a hash."""

    def present(self, hashes: Iterable[str]) -> set[str]:
        """Those of ``hashes`` whose bytes are kept."""

    def delete(self, hashes: Iterable[str]) -> int:
        """Forget the bytes of these hashes (gone already: fine); how many went."""

    def sync(self) -> None:
        """Make every put with ``sync=False`` so far durable (a batch's group commit); a
        failure raises (OSError, TemporaryStoreError): the batch must not be acknowledged."""


class FileBlobs:
    """Blobs as files ``<root>/<first two hex digits>/<sha256>`` (see the module)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._folders: set[str] = set()  # made (or found) already: no stat for each put

    def __reduce__(self) -> tuple:
        """Pickled as its root alone, unpickled as that process's one FileBlobs of the root:
        a reader process gets them with every mail it writes, and keeps what it learnt."""
        return file_blobs, (str(self.root),)

    def put(self, payload: bytes | Iterable[bytes], sha256: str | None = None,
            sync: bool = True) -> str:
        """Write ``payload`` to its file (see :meth:`Blobs.put`); an OSError (a full disk,
        an unwritable directory) leaves no partial file behind."""
        digest = sha256 or hashlib.sha256(payload).hexdigest()
        folder = os.path.join(self.root, checked(digest)[:2])
        target = os.path.join(folder, digest)
        if os.path.exists(target):
            if sync:  # perhaps written by a batch that has not synced yet
                fsync(target)
            return digest
        if folder not in self._folders:
            _make_dirs(self.root, Path(folder))
            self._folders.add(folder)
        # A name of this thread's own: writers of the same bytes never share a file.
        tmp = os.path.join(folder, f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            fd = _created(tmp)
        except FileNotFoundError:  # the folder went since (a restore): made again
            _make_dirs(self.root, Path(folder))
            fd = _created(tmp)
        _written_over(fd, tmp, target,
                      (payload,) if isinstance(payload, bytes) else payload, sync)
        if sync:
            fsync(folder)  # the rename itself
        return digest

    def get(self, sha256: str) -> bytes:
        """The file's bytes."""
        return self.path(sha256).read_bytes()

    def chunks(self, sha256: str) -> Iterator[bytes]:
        """The file's bytes a chunk at a time (opened now: a missing file raises here)."""
        return _read(self.path(sha256).open("rb"))

    def size(self, sha256: str) -> int:
        """The file's size."""
        return self.path(sha256).stat().st_size

    def present(self, hashes: Iterable[str]) -> set[str]:
        """The hashes whose files exist."""
        return {h for h in hashes if self.path(h).is_file()}

    def delete(self, hashes: Iterable[str]) -> int:
        """Remove the files of these hashes; how many were removed."""
        removed = 0
        for path in [self.path(h) for h in hashes]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed

    def sync(self) -> None:
        """Flush the file system the files are on (nothing was written if the folder is
        not there yet)."""
        if self.root.is_dir():
            sync_filesystem(self.root)

    def path(self, sha256: str) -> Path:
        """Where the file with this hash lives; the hash is checked, never taken from mail."""
        return self.root / checked(sha256)[:2] / sha256


@functools.lru_cache(maxsize=8)
def file_blobs(root: str) -> FileBlobs:
    """This process's FileBlobs under ``root`` (see :meth:`FileBlobs.__reduce__`)."""
    return FileBlobs(Path(root))


def _read(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def _created(path: str) -> int:
    """A new (or emptied) file 0600, open for writing."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)


def _make_dirs(root: Path, folder: Path) -> None:
    """``root`` and ``folder`` below it, each created 0700 where missing."""
    for path in (root, folder):
        if not path.is_dir():
            path.mkdir(mode=0o700, parents=True, exist_ok=True)


def replace_private(path: Path, text: str, sync: bool = False) -> None:
    """Replace the small file ``path`` by ``text`` as a whole: written 0600 to a temporary
    name of this thread's beside it, then renamed over it, so a reader finds the old file
    or the new one, never a part; ``sync`` makes the new one durable before the rename.  An
    OSError raises and leaves no temporary file behind."""
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"))
    _written_over(_created(tmp), tmp, str(path), (text.encode("utf-8"),), sync)


def _written_over(fd: int, tmp: str, target: str, chunks: Iterable[bytes],
                  sync: bool) -> None:
    """``chunks`` written to the new file ``tmp`` (open as ``fd``), fsynced if ``sync``,
    then renamed to ``target``; on any error ``tmp`` is removed and the error raised."""
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def fsync(path: Path | str) -> None:
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
    syncfs = getattr(libc(), "syncfs", None)
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
def libc() -> ctypes.CDLL | None:
    """The C library, for what Python does not offer (syncfs, malloc_trim), or None where
    it cannot be found."""
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


def give_back_memory() -> None:
    """Return the heap memory freed so far to the system (glibc's malloc_trim; elsewhere
    nothing), after each IMAP batch and every few seconds from the daemon's status loop:
    the daemon's size then follows what it holds, not the largest batch it read nor what
    its threads freed over months, and a big mail later is measured from there."""
    trim = getattr(libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def checked(sha256: str) -> str:
    """``sha256`` itself, or ValueError when it is not a SHA-256 hex digest."""
    if not is_digest(sha256):
        raise ValueError("not a sha256 hex digest")
    return sha256


def is_digest(name: str) -> bool:
    """Whether ``name`` is a sha256 hex digest: the only names files have in these folders."""
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)
