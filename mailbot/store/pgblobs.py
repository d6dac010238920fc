"""Raw mails and attachments in PostgreSQL (migration m011): what every node of a cluster
reads and writes, so that none keeps mail of its own.

A blob is rows of ``blob_chunks`` (kind, sha256, seq, data), :data:`CHUNK_BYTES` each
(the last one shorter), and one row of ``blobs`` (kind, sha256, size, created_at) written
after its last chunk: that row is its presence.  A chunk is written in a short transaction
of its own, without the store's cluster-wide write lock (nodes write blobs in parallel,
and a 50 MB file never waits for a ticket's transaction nor holds one up), committed
without waiting for the WAL flush; a put with ``sync`` then makes them durable with one
synchronous commit, a batch with :meth:`PostgresBlobs.sync`.  A put that died half-way
left chunks and no ``blobs`` row: the next put of the same bytes writes only the chunks
that are missing and completes it.  Content addressing keeps writers from contradicting
each other: a key always holds the same bytes.
"""

from __future__ import annotations

import errno
import hashlib
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from mailbot.store import Store, iso
from mailbot.store.blobs import CHUNK_BYTES, checked


class PostgresBlobs:
    """The blobs of one kind in a PostgreSQL store (see the module)."""

    def __init__(self, store: Store, kind: str) -> None:  # a PostgresStore
        self.store = store
        self.kind = kind
        self._unsynced = False  # a put with sync=False committed since the last sync

    def put(self, payload: bytes | Iterable[bytes], sha256: str | None = None,
            sync: bool = True) -> str:
        """Write the chunks the database lacks, then the ``blobs`` row (see the module);
        a fault of the database is a :class:`~mailbot.store.TemporaryStoreError`."""
        digest = checked(sha256 or hashlib.sha256(payload).hexdigest())
        if self._size(digest) is None:
            self._write(digest, payload)
        if sync:  # perhaps put by a batch that has not synced yet
            self.store.sync()
        else:
            self._unsynced = True
        return digest

    def _write(self, digest: str, payload: bytes | Iterable[bytes]) -> None:
        """The missing chunks, then the row that says the blob is whole."""
        store, key = self.store, {"kind": self.kind, "sha": digest}
        written = {r["seq"]: r["n"] for r in store.rows(
            "SELECT seq, octet_length(data) AS n FROM blob_chunks "
            "WHERE kind = :kind AND sha256 = :sha", key)}
        size = 0
        for seq, chunk in enumerate(_even(payload)):
            size += len(chunk)
            if written.get(seq) == len(chunk):  # left by a put that died half-way
                continue
            with store.row_locked():
                store.execute("INSERT INTO blob_chunks(kind, sha256, seq, data) "
                              "VALUES (:kind, :sha, :seq, :data) ON CONFLICT (kind, sha256, seq) "
                              "DO UPDATE SET data = excluded.data",
                              {**key, "seq": seq, "data": chunk})
        with store.row_locked():
            store.execute("INSERT INTO blobs(kind, sha256, size, created_at) "
                          "VALUES (:kind, :sha, :size, :at) ON CONFLICT (kind, sha256) DO NOTHING",
                          {**key, "size": size, "at": iso(datetime.now(UTC))})

    def get(self, sha256: str) -> bytes:
        """The blob's bytes, whole."""
        return b"".join(self.chunks(sha256))

    def chunks(self, sha256: str) -> Iterator[bytes]:
        """The blob's chunks in order, each read by a statement of its own (the connection
        is free between them); a blob that is not whole raises here."""
        size = self.size(sha256)
        return self._read(sha256, size)

    def _read(self, digest: str, size: int) -> Iterator[bytes]:
        seq = done = 0
        while done < size:
            row = self.store.row("SELECT data FROM blob_chunks "
                                 "WHERE kind = ? AND sha256 = ? AND seq = ?",
                                 (self.kind, digest, seq))
            if row is None:
                raise self._missing(digest, f"chunk {seq} is missing")
            yield row["data"]
            done += len(row["data"])
            seq += 1

    def size(self, sha256: str) -> int:
        """The blob's size; FileNotFoundError when it is not whole in the database."""
        size = self._size(checked(sha256))
        if size is None:
            raise self._missing(sha256, "not in the database")
        return size

    def _size(self, digest: str) -> int | None:
        row = self.store.row("SELECT size FROM blobs WHERE kind = ? AND sha256 = ?",
                             (self.kind, digest))
        return None if row is None else row["size"]

    def present(self, hashes: Iterable[str]) -> set[str]:
        """The hashes whose blobs are whole in the database."""
        wanted = _hashes(hashes)
        if wanted == "[]":
            return set()
        return {r["sha256"] for r in self.store.rows(
            "SELECT sha256 FROM blobs WHERE kind = :kind AND sha256 IN "  # noqa: S608
            f"({self.store.dialect.each(':hashes', 'text')})",
            {"kind": self.kind, "hashes": wanted})}

    def delete(self, hashes: Iterable[str]) -> int:
        """Delete the blobs' rows and their chunks (those of an unfinished put too), in one
        short transaction without the write lock; how many blobs were whole."""
        wanted = _hashes(hashes)
        if wanted == "[]":
            return 0
        each = self.store.dialect.each(":hashes", "text")
        values = {"kind": self.kind, "hashes": wanted}
        with self.store.row_locked():
            gone = self.store.execute("DELETE FROM blobs WHERE kind = :kind "  # noqa: S608
                                      f"AND sha256 IN ({each})", values)
            self.store.execute("DELETE FROM blob_chunks WHERE kind = :kind "  # noqa: S608
                               f"AND sha256 IN ({each})", values)
        return gone

    def sync(self) -> None:
        """One synchronous commit behind every put with ``sync=False`` (none: nothing to do)."""
        if self._unsynced:
            self._unsynced = False  # before: a put committed meanwhile is flagged again
            self.store.sync()

    def _missing(self, sha256: str, why: str) -> FileNotFoundError:
        return FileNotFoundError(errno.ENOENT, why, f"{self.kind}/{sha256}")


def _hashes(hashes: Iterable[str]) -> str:
    """Checked hashes as one JSON array, for ``dialect.each``."""
    return json.dumps(sorted({checked(h) for h in hashes}))


def _even(payload: bytes | Iterable[bytes]) -> Iterator[bytes | memoryview]:
    """``payload`` cut into chunks of exactly :data:`CHUNK_BYTES`, the last one shorter,
    however its pieces came: the same bytes always make the same chunks."""
    if isinstance(payload, bytes):
        view = memoryview(payload)
        for start in range(0, len(view), CHUNK_BYTES):
            yield view[start:start + CHUNK_BYTES]
        return
    pending = bytearray()
    for piece in payload:
        pending += piece
        while len(pending) >= CHUNK_BYTES:
            yield bytes(pending[:CHUNK_BYTES])
            del pending[:CHUNK_BYTES]
    if pending:
        yield bytes(pending)
