"""The PostgreSQL engine of the store: the same interface and semantics as the SQLite one.

One connection (psycopg 3, autocommit outside transactions), guarded by the store's lock
like SQLite's.  :meth:`PostgresStore.transaction` stands for SQLite's ``BEGIN IMMEDIATE``:
it takes one cluster-wide write lock (a transaction-level advisory lock), so writers of
every process and every node queue as they do on one SQLite file, each for at most the
busy timeout.  ``durable=False`` commits without waiting for the WAL flush
(``synchronous_commit = off``); :meth:`PostgresStore.sync` makes them durable with one
synchronous commit.  A fault of the server or the network (psycopg's OperationalError:
connection lost, lock or statement timeout, deadlock, disk full, shutdown) is a
:class:`TemporaryStoreError`; a lost connection is opened again on next use.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Dumper
from psycopg.rows import dict_row

from mailbot.store import Store, TemporaryStoreError, dialect, insert_statement, schema
from mailbot.store.schema import SchemaVersion

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
                 any_schema: bool = False) -> None:
        """Connect to the database at URL ``where``; schema as for SQLite (see Store)."""
        self.url = str(where)
        self.path = None
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._conn: psycopg.Connection | None = None
        try:
            with self._connection():
                pass  # connect now: a wrong URL or password shows at start
            if not any_schema:
                self._prepare_schema()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> psycopg.Connection:
        """A new connection in autocommit mode, rows as dicts, flags as integers."""
        conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                               connect_timeout=max(1, round(self.busy_timeout)),
                               application_name="mailbot")
        conn.adapters.register_dumper(bool, _BoolAsInteger)
        return conn

    def close(self) -> None:
        """Close the connection (a pending transaction is rolled back)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    @contextlib.contextmanager
    def _connection(self, deadline: float | None = None) -> Iterator[psycopg.Connection]:
        """The connection, for this thread alone until the block ends (see Store)."""
        deadline = time.monotonic() + self.busy_timeout if deadline is None else deadline
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TemporaryStoreError(f"database busy: no connection within "
                                      f"{self.busy_timeout:g} s")
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            yield self._conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise TemporaryStoreError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def transaction(self, durable: bool = True) -> Iterator[Store]:
        """One atomic write under the cluster-wide write lock (see the module); nested use is
        part of the transaction around it."""
        deadline = time.monotonic() + self.busy_timeout
        with self._connection(deadline) as conn:
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                yield self
                return
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
                if not conn.closed and not conn.broken \
                        and conn.info.transaction_status != pq.TransactionStatus.IDLE:
                    with contextlib.suppress(psycopg.Error):  # the first error is the news
                        conn.execute("ROLLBACK")
                raise

    def sync(self) -> None:
        """Make every commit so far durable: one commit that waits for the WAL flush (a
        transaction id makes it write a commit record behind all earlier ones)."""
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
        return schema.postgres_is_empty(self._conn)

    def _version(self) -> SchemaVersion:
        return schema.compare(schema.postgres_applied(self._conn))

    def _apply_migrations(self) -> None:
        schema.postgres_apply(self._conn)
