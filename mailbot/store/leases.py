"""Leases: work that only one node of several may do at a time (reading one IMAP mailbox).

A lease is taken with :meth:`Lease.acquire` (at once or not at all: a node that does not
get it waits and tries again), checked with :meth:`Lease.held` before each piece of work
that must not be done twice, and given back with :meth:`Lease.release`.  The holder that
finds it lost stops working at once.  One interface, two engines:

* PostgreSQL (:class:`AdvisoryLease` in :mod:`mailbot.store.postgres`): a session-level
  advisory lock on a connection of the lease's own.  A node that dies (SIGKILL, crash)
  closes its socket and the server frees the lock at once; a host that vanishes is noticed
  by TCP keepalives on both ends within :data:`DEAD_PEER_SECONDS`.
* SQLite (:class:`FileLease`): an ``flock`` on a file beside the database, for daemons of one
  host that share one database file; the kernel frees it when the process ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Protocol

# TCP keepalives of a lease's connection: the first probe after this many idle seconds,
# then one every interval, and the peer counts as dead after ``count`` unanswered ones.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 2, 3
DEAD_PEER_SECONDS = KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT


class Lease(Protocol):
    """The right to do one piece of work alone across every node of the cluster."""

    name: str  # what it guards, for logs

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; whether this node holds it now."""

    def held(self) -> bool:
        """Whether this node still holds the lease (False once it was lost or released)."""

    def release(self) -> None:
        """Give the lease back (nothing happens when it is not held)."""


def mailbox_key(host: str, username: str, folder: str) -> str:
    """The key of an IMAP mailbox's lease: nodes with the same ``[[imap]]`` table share it
    (the host's case does not matter, the user's and folder's may)."""
    return json.dumps(["imap", host.lower(), username, folder])


def lock_number(key: str) -> int:
    """The 64-bit signed number of a lease key (PostgreSQL's advisory locks are numbered)."""
    digest = hashlib.sha256(f"mailbot:lease:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lease_file(database: Path, key: str) -> Path:
    """Where the flock of lease ``key`` lives: a file beside the SQLite database."""
    return database.with_name(f"{database.name}-lease-{lock_number(key) & (2**64 - 1):016x}")


class FileLease:
    """A lease as an ``flock`` on a file (SQLite: the nodes are processes of one host).

    flock belongs to the open file, so the lease is held for as long as the file is open
    here, and the kernel gives it back when the process ends however it ends.
    """

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the flock without waiting; whether it is held now."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def held(self) -> bool:
        """Whether the flock is held (an open file's flock cannot be lost)."""
        return self._fd is not None

    def release(self) -> None:
        """Close the file, which frees the flock."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
