"""The PostgreSQL engine of the store: the same interface and semantics as the SQLite one.

A pool of connections (psycopg 3 and psycopg_pool; autocommit outside transactions; at
most ``[store] pool_size``, opened as they are needed), so that the threads of a daemon
(sources, listener, sender, web pages, jobs) do not wait for each other: a transaction
holds one connection for its whole duration, for its thread alone (nested use in that
thread joins it), and a statement outside a transaction borrows one for that statement.
Waiting for a free connection longer than the busy timeout is a
:class:`TemporaryStoreError`.  A connection is checked when it is taken from the pool: one
the server ended (restart, failover, idle timeout) is replaced, and the others waiting in
the pool are checked at once, before a statement meets them.

:meth:`PostgresStore.transaction` stands for SQLite's ``BEGIN IMMEDIATE``: it takes one
cluster-wide write lock (a transaction-level advisory lock), so writers of every thread,
process and node queue as they do on one SQLite file, each for at most the busy timeout
(a process's writers on a lock of its own first, holding no connection meanwhile);
readers do not wait for them and see what was committed.  ``durable=False`` commits
without waiting for the WAL flush (``synchronous_commit = off``); :meth:`PostgresStore.sync`
makes them durable with one synchronous commit, on whichever connection: the server has
one WAL, flushed in order, so flushing one commit record flushes every earlier one.  A
fault of the server or the network (psycopg's OperationalError: connection lost, lock or
statement timeout, deadlock, disk full, shutdown) is a :class:`TemporaryStoreError`.

Beside the write lock: :meth:`PostgresStore.row_locked` is a transaction without it, for a
statement whose row locks keep the nodes apart (the outbox claim, FOR UPDATE SKIP LOCKED),
and :class:`AdvisoryLease` is a lease (:mod:`mailbot.store.leases`) on a connection of its
own.
"""

from __future__ import annotations

import contextlib
import hashlib
import select
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq
from psycopg.adapt import Dumper
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from mailbot.store import Store, TemporaryStoreError, dialect, insert_statement, leases, schema
from mailbot.store.schema import SchemaVersion

if TYPE_CHECKING:
    from mailbot.store.blobs import Blobs

# The key of the write lock every transaction takes (stable across processes and nodes).
WRITE_LOCK = int.from_bytes(hashlib.sha256(b"mailbot:write").digest()[:8], "big", signed=True)


class _BoolAsInteger(Dumper):
    """Python booleans as 0/1: the schema keeps flags in integer columns, as SQLite does."""

    oid = psycopg.adapters.types["int8"].oid

    def dump(self, obj: bool) -> bytes:
        """The integer text of a flag."""
        return b"1" if obj else b"0"


class PostgresStore(Store):
    """Access to mailbot's PostgreSQL database (a ``postgresql://`` URL)."""

    dialect = dialect.POSTGRES

    def __init__(self, where: Path | str, busy_timeout: float = 5.0, *,
                 any_schema: bool = False, pool_size: int = 4) -> None:
        """Connect to the database at URL ``where`` with a pool of at most ``pool_size``
        connections; schema as for SQLite (see Store)."""
        self.url = str(where)
        self.path = None
        self.busy_timeout = busy_timeout
        self._held = threading.local()  # .conn: the connection this thread's block holds
        self._writer = threading.Lock()  # this process's turn to write (see _write_turn)
        settings = {"autocommit": True, "row_factory": dict_row,
                    "connect_timeout": max(1, round(busy_timeout)),
                    "application_name": "mailbot"}
        with _temporary():  # connect now: a wrong URL or password shows at start, and why
            psycopg.connect(self.url, **settings).close()
        self._pool = ConnectionPool(self.url, kwargs=settings, min_size=1,
                                    max_size=max(1, pool_size), timeout=busy_timeout,
                                    configure=self._configure, check=self._check,
                                    name="mailbot", open=True)
        try:
            if not any_schema:
                self._prepare_schema()
        except BaseException:
            self.close()
            raise

    def _configure(self, conn: psycopg.Connection) -> None:
        """A new connection of the pool: flags as integers, and a row lock waited for at
        most the busy timeout outside transactions too (they set their own)."""
        conn.adapters.register_dumper(bool, _BoolAsInteger)
        conn.execute(f"SET lock_timeout = {int(self.busy_timeout * 1000)}")  # ours, an int

    def _check(self, conn: psycopg.Connection) -> None:
        """Whether a connection taken from the pool works.  A session the server ended
        (restart, failover, idle timeout) left its last words or the end of the stream on
        the socket, so a socket with nothing to read passes without a round trip (one per
        statement cost a tenth of the mails per second); one with something is asked with a
        round trip.  A connection that fails it means the server likely ended the others
        too: they are checked, and replaced, at once."""
        waiting = select.poll()
        waiting.register(conn.fileno(), select.POLLIN)
        if not waiting.poll(0):
            return
        try:
            ConnectionPool.check_connection(conn)
        except psycopg.Error:
            self._pool.check()
            raise

    def close(self) -> None:
        """Close the pool (a connection still in use is closed when its block ends)."""
        self._pool.close()

    def blobs(self, kind: str, data_dir: Path) -> Blobs:
        """Where the bytes of ``kind`` are kept: in this database, so that every node
        reads what any node wrote (``data_dir`` holds none of them)."""
        from mailbot.store.pgblobs import PostgresBlobs

        return PostgresBlobs(self, kind)

    def lease(self, key: str, name: str) -> leases.Lease:
        """The lease ``key`` (not taken yet): an advisory lock on a connection of its own."""
        return AdvisoryLease(self.url, key, name, self.busy_timeout)

    @contextlib.contextmanager
    def _connection(self, deadline: float | None = None) -> Iterator[psycopg.Connection]:
        """A connection for this thread alone until the block ends: the one a block around
        it holds in this thread, else one from the pool, waited for until ``deadline``
        (default: the busy timeout from now)."""
        held = getattr(self._held, "conn", None)
        if held is not None:
            with _temporary():
                yield held
            return
        deadline = time.monotonic() + self.busy_timeout if deadline is None else deadline
        with _temporary():
            try:
                conn = self._pool.getconn(timeout=max(0.0, deadline - time.monotonic()))
            except PoolTimeout as exc:
                raise TemporaryStoreError(f"database busy: no connection within "
                                          f"{self.busy_timeout:g} s (all in use, or the "
                                          "server cannot be reached)") from exc
            self._held.conn = conn
            try:
                yield conn
            finally:
                self._held.conn = None
                self._pool.putconn(conn)

    @contextlib.contextmanager
    def transaction(self, durable: bool = True) -> Iterator[Store]:
        """One atomic write under the cluster-wide write lock (see the module); nested use is
        part of the transaction around it."""
        if self._in_transaction():
            yield self
            return
        deadline = time.monotonic() + self.busy_timeout
        with self._write_turn(deadline), self._connection(deadline) as conn:
            wait_ms = max(1, int((deadline - time.monotonic()) * 1000))
            try:  # one round trip; every value is an integer of ours
                conn.execute(
                    f"BEGIN; SET LOCAL lock_timeout = {wait_ms};"
                    f"{'' if durable else ' SET LOCAL synchronous_commit = off;'}"
                    f" SELECT pg_advisory_xact_lock({WRITE_LOCK});"
                    f" SET LOCAL lock_timeout = {int(self.busy_timeout * 1000)}")
                yield self
                conn.execute("COMMIT")
            except BaseException:
                _roll_back(conn)
                raise

    def _in_transaction(self) -> bool:
        """Whether this thread is inside a transaction of this store."""
        held = getattr(self._held, "conn", None)
        return held is not None and held.info.transaction_status != pq.TransactionStatus.IDLE

    @contextlib.contextmanager
    def _write_turn(self, deadline: float) -> Iterator[None]:
        """This process's turn to write: its writers queue here, until ``deadline``, before
        the cluster-wide write lock, so that a waiting writer holds no connection (readers
        find them free) and one at most waits at the server (a queue there hands the lock
        to a process that may not run yet: fewer mails per second on a busy host)."""
        if not self._writer.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TemporaryStoreError(f"database busy: no write lock within "
                                      f"{self.busy_timeout:g} s")
        try:
            yield
        finally:
            self._writer.release()

    @contextlib.contextmanager
    def row_locked(self) -> Iterator[Store]:
        """A short transaction without the cluster-wide write lock, committed without waiting
        for the WAL flush: for a statement whose row locks keep writers apart (a claim with
        FOR UPDATE SKIP LOCKED), so that the nodes do not queue for it.  A row lock is waited
        for at most the busy timeout; nested use is part of the transaction around it."""
        with self._connection() as conn:
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                yield self
                return
            try:  # one round trip; the value is an integer of ours
                conn.execute(f"BEGIN; SET LOCAL lock_timeout = {int(self.busy_timeout * 1000)};"
                             " SET LOCAL synchronous_commit = off")
                yield self
                conn.execute("COMMIT")
            except BaseException:
                _roll_back(conn)
                raise

    def sync(self) -> None:
        """Make every commit so far durable, whichever connection made it: one commit that
        waits for the WAL flush (a transaction id makes it write a commit record behind all
        earlier ones; the server's one WAL is flushed in order)."""
        with self._connection() as conn:
            conn.execute("BEGIN; SET LOCAL synchronous_commit = on; SELECT txid_current(); "
                         "COMMIT")

    def rows(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        """Rows of a query as plain dicts."""
        with self._connection() as conn:
            cursor = conn.execute(dialect.to_pyformat(sql), params)
            return cursor.fetchall() if cursor.description else []

    def execute(self, sql: str, params: tuple | dict = ()) -> int:
        """Run one statement; the rows it changed (an id only through RETURNING)."""
        with self._connection() as conn:
            return conn.execute(dialect.to_pyformat(sql), params).rowcount

    def insert(self, table: str, record: dict[str, Any]) -> int:
        """Insert one row into a known table; its id (see Store)."""
        sql, values = insert_statement(table, record)
        return self.row(sql + " RETURNING id", values)["id"]

    def _is_empty(self) -> bool:
        with self._connection() as conn:
            return schema.postgres_is_empty(conn)

    def _version(self) -> SchemaVersion:
        with self._connection() as conn:
            return schema.compare(schema.postgres_applied(conn))

    def _apply_migrations(self) -> None:
        with self._connection() as conn:
            schema.postgres_apply(conn)


@contextlib.contextmanager
def _temporary() -> Iterator[None]:
    """A fault of the server or the network in the block as a :class:`TemporaryStoreError`."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise TemporaryStoreError(f"{type(exc).__name__}: {exc}") from exc


def _roll_back(conn: psycopg.Connection) -> None:
    """End a failed transaction, if the connection still has one (the first error is the
    news: a failing rollback is not)."""
    if not conn.closed and not conn.broken \
            and conn.info.transaction_status != pq.TransactionStatus.IDLE:
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")


class AdvisoryLease:
    """A lease (:mod:`mailbot.store.leases`) as a session-level advisory lock, on a connection
    of its own with TCP keepalives on both ends: the server frees the lock when the holder's
    connection ends (at once for a process that died, within
    :data:`~mailbot.store.leases.DEAD_PEER_SECONDS` for a host gone from the network), and
    the holder finds it lost as soon as a round trip fails."""

    def __init__(self, url: str, key: str, name: str, connect_seconds: float) -> None:
        self.url = url
        self.name = name
        self.number = leases.lock_number(key)
        self.connect_seconds = connect_seconds
        self._conn: psycopg.Connection | None = None
        self._held = False

    def acquire(self) -> bool:
        """Try the advisory lock once; whether it is held now.  A database that cannot be
        reached is a :class:`TemporaryStoreError`."""
        if self.held():
            return True
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            self._held = self._conn.execute("SELECT pg_try_advisory_lock(%s) AS got",
                                            (self.number,)).fetchone()["got"]
        except psycopg.Error as exc:
            self.release()
            raise TemporaryStoreError(f"lease {self.name}: {type(exc).__name__}: {exc}") \
                from exc
        return self._held

    def held(self) -> bool:
        """Whether the lock is still held: one round trip on its connection (the lock lives
        as long as the session; a connection that fails has lost it)."""
        if not self._held:
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            self.release()
            return False
        return True

    def release(self) -> None:
        """Unlock, then close the lease's connection.  Closing alone frees the lock only when
        the server's backend has seen the session end, a moment after this returns; the
        explicit unlock frees it before, so another node can take the lease at once."""
        conn, held, self._conn, self._held = self._conn, self._held, None, False
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                if held and not (conn.closed or conn.broken):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (self.number,))
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def _connect(self) -> psycopg.Connection:
        """The lease's connection: keepalives here (libpq) and on the server's end (its
        settings for this session; ignored over a Unix socket), and unacknowledged data
        gives up after as long."""
        idle, interval, count = (leases.KEEPALIVE_IDLE, leases.KEEPALIVE_INTERVAL,
                                 leases.KEEPALIVE_COUNT)
        conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                               connect_timeout=max(1, round(self.connect_seconds)),
                               application_name="mailbot lease", keepalives=1,
                               keepalives_idle=idle, keepalives_interval=interval,
                               keepalives_count=count,
                               tcp_user_timeout=leases.DEAD_PEER_SECONDS * 1000)
        try:
            conn.execute(f"SET tcp_keepalives_idle = {idle}; "  # integers of ours
                         f"SET tcp_keepalives_interval = {interval}; "
                         f"SET tcp_keepalives_count = {count}")
        except BaseException:
            conn.close()
            raise
        return conn
