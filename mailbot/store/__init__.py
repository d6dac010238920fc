"""The SQLite store: the only package that speaks SQL.

One connection for writing, guarded by a lock, shared by the sources' threads and the
event loop.  Writes happen inside :meth:`Store.transaction` (``BEGIN IMMEDIATE``), so one
mail is one transaction and a second process (the CLI) waits instead of failing.  A read
outside a transaction takes a connection of its own from a few kept for reading, so it
never waits for another thread's transaction (the write-ahead log lets it read the last
commit meanwhile).
Waiting is bounded by the busy timeout, for the lock of this process as for another
process's write lock; a fault of the database or of the disk under it (busy, locked,
full, I/O error, cannot open) is a :class:`TemporaryStoreError`, never a broken mail.
The database file is created 0600 in a 0700 directory.  A new, empty database gets the
whole schema when first opened; an existing one on another schema is refused
(:class:`SchemaMismatch`) until `mailbot migrate` (:meth:`Store.migrate`) brings it up.

``Store(where)`` opens the engine ``where`` names: a path or ``sqlite:///path`` is this
SQLite store, a ``postgresql://`` URL the PostgreSQL one (:mod:`mailbot.store.postgres`),
with the same interface and transaction semantics; what the engines spell differently in
SQL is in :mod:`mailbot.store.dialect` (``store.dialect``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlite_utils import Database

from mailbot.store import dialect, schema
from mailbot.store.schema import SchemaMismatch, SchemaVersion, migrations

if TYPE_CHECKING:
    from mailbot.store.blobs import Blobs
    from mailbot.store.leases import Lease


class TemporaryStoreError(Exception):
    """The database is busy or unavailable right now; the caller should retry later."""


# SQLite's primary result codes that say the database or the disk under it failed, not the
# statement: a mail that met one of them must wait and be tried again, never be quarantined.
TEMPORARY_CODES = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_NOTADB,
})


def iso(moment: datetime | None) -> str | None:
    """The stored form of a timestamp: ISO 8601 in UTC."""
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="microseconds")


# Rows a scheduled job reads at a time: its memory is a page, whatever the size of the desk.
PAGE = 200


def pages(fetch: Callable[[dict | None, int], list[dict]]) -> Iterator[dict]:
    """Every row of a keyset-paged query, read as the caller goes: ``fetch(after, limit)``
    returns up to ``limit`` rows after the row ``after`` (None: the first page).  Rows
    the caller changes on its way are not read twice: the next page starts after the last."""
    after = None
    while True:
        page = fetch(after, PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1]


class Store:
    """Access to mailbot's database: SQLite here, PostgreSQL in a subclass."""

    dialect = dialect.SQLITE

    def __new__(cls, where: Path | str, *args: Any, **kwargs: Any) -> Store:
        """The engine ``where`` names: PostgreSQL for a ``postgresql://`` URL, else SQLite."""
        if cls is Store and dialect.is_postgres(where):
            from mailbot.store.postgres import PostgresStore  # psycopg only when needed
            cls = PostgresStore
        return super().__new__(cls)

    def __init__(self, where: Path | str, busy_timeout: float = 5.0, *,
                 any_schema: bool = False, pool_size: int = 1) -> None:
        """Open (or create) the SQLite database at ``where`` (a path or ``sqlite:///path``).

        A new, empty database is given the current schema; any other must be at it already,
        else :class:`SchemaMismatch`.  ``any_schema`` opens it as it is, for
        `mailbot migrate`, which brings it to the current schema.  ``pool_size`` is
        PostgreSQL's (``[store] pool_size``): SQLite has one writer, and one connection.
        """
        path = dialect.sqlite_path(where) if isinstance(where, str) else where
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Created private before SQLite opens it: its -wal and -shm files take its mode.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = sqlite3.connect(path, timeout=busy_timeout, check_same_thread=False,
                               isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            _into_wal(conn, busy_timeout)
        except BaseException:
            conn.close()
            raise
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        self.path = path
        self.busy_timeout = busy_timeout
        self.db = Database(conn)
        self._lock = threading.RLock()
        self._local = threading.local()  # .writing: this thread is inside a transaction
        self._spare: list[sqlite3.Connection] = []  # reading connections not in use
        self._spare_lock = threading.Lock()
        if not any_schema:
            try:
                self._prepare_schema()
            except BaseException:
                conn.close()
                raise

    def _prepare_schema(self) -> None:
        """Give a new, empty database the schema; refuse one at another schema than ours.

        The write lock is taken before the database is looked at again, so of several
        processes starting on a new database one creates the schema and the others find it
        made and go on.  A database at the current schema takes no write lock at all; one at
        an older schema is never migrated here, as a daemon may be running on it.
        """
        with self._connection():
            empty = self._is_empty()
            found = None if empty else self._version()
        if empty:
            with self.transaction():
                if self._is_empty():
                    self._apply_migrations()
                found = self._version()
        if not found.current:
            raise SchemaMismatch(found)

    def _is_empty(self) -> bool:
        """Whether the database has no tables at all (inside :meth:`_connection`)."""
        return schema.is_empty(self.db)

    def _version(self) -> SchemaVersion:
        """The schema version (inside :meth:`_connection`)."""
        return schema.version(self.db)

    def _apply_migrations(self) -> None:
        """Apply the pending migrations (inside :meth:`transaction`)."""
        migrations.apply(self.db)

    def schema_version(self) -> SchemaVersion:
        """Where this database stands against this code's schema."""
        with self._connection():
            return self._version()

    def migrate(self) -> tuple[SchemaVersion, SchemaVersion]:
        """Apply the pending migrations in one transaction; the versions before and after.

        A database of a newer mailbot is refused (:class:`SchemaMismatch`): this code
        knows nothing of its later migrations.
        """
        with self.transaction():
            before = self._version()
            if before.unknown:
                raise SchemaMismatch(before)
            self._apply_migrations()
            after = self._version()
        return before, after

    def close(self) -> None:
        """Close the connections (pending transactions are rolled back)."""
        with self._lock:
            self.db.conn.close()
        with self._spare_lock:
            spare, self._spare = self._spare, []
        for conn in spare:
            conn.close()

    def blobs(self, kind: str, data_dir: Path) -> Blobs:
        """Where the bytes of ``kind`` (raw mails, attachments) are kept beside this store:
        files in the folder ``kind`` of the data directory."""
        from mailbot.store.blobs import FileBlobs

        return FileBlobs(data_dir / kind)

    def lease(self, key: str, name: str) -> Lease:
        """The lease ``key`` (not taken yet): an flock on a file beside the database, for
        daemons of one host that share it."""
        from mailbot.store.leases import FileLease, lease_file

        return FileLease(lease_file(self.path, key), name)

    @contextlib.contextmanager
    def _connection(self, deadline: float | None = None) -> Iterator[sqlite3.Connection]:
        """The connection, for this thread alone until the block ends.

        Waiting for another thread of this process gives up at ``deadline`` (default: the
        busy timeout from now), and SQLite errors of the database or disk become
        :class:`TemporaryStoreError`, whatever statement met them.
        """
        deadline = time.monotonic() + self.busy_timeout if deadline is None else deadline
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TemporaryStoreError(f"database busy: no connection within "
                                      f"{self.busy_timeout:g} s")
        try:
            yield self.db.conn
        except sqlite3.Error as exc:
            _raise_temporary(exc)
            raise
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def transaction(self, durable: bool = True) -> Iterator[Store]:
        """One atomic write; a busy database becomes :class:`TemporaryStoreError`.

        ``durable=False`` skips the fsync of this commit (WAL keeps it safe from a crash of
        the process, not from power loss): for bookkeeping whose loss only causes a resend,
        or for a batch made durable at once with :meth:`sync` before it is acknowledged.
        The busy timeout bounds the whole wait: for another thread of this process first,
        then, with what is left of it, for another process's write lock.
        """
        deadline = time.monotonic() + self.busy_timeout
        with self._connection(deadline) as conn:
            if conn.in_transaction:  # nested: part of the transaction around it
                yield self
                return
            if not durable:
                conn.execute("PRAGMA synchronous=NORMAL")
            try:
                _begin_immediate(conn, deadline - time.monotonic(), self.busy_timeout)
                self._local.writing = True
                yield self
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # the first error is the news
                        conn.execute("ROLLBACK")
                raise
            finally:
                self._local.writing = False
                if not durable:
                    conn.execute("PRAGMA synchronous=FULL")

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[Store]:
        """A part of the transaction around it that can fail on its own: an exception in
        the block undoes what the block wrote (and propagates); the rest of the transaction
        stays.  One mail of a group filed in one transaction is one savepoint."""
        if not self._in_transaction():
            raise RuntimeError("a savepoint belongs inside a transaction")
        self.execute("SAVEPOINT part")
        try:
            yield self
        except BaseException:
            with contextlib.suppress(TemporaryStoreError, sqlite3.Error):  # the first error
                self.execute("ROLLBACK TO SAVEPOINT part")                  # is the news
                self.execute("RELEASE SAVEPOINT part")
            raise
        self.execute("RELEASE SAVEPOINT part")

    def _in_transaction(self) -> bool:
        """Whether this thread is inside a transaction of this store."""
        return getattr(self._local, "writing", False)

    def sync(self) -> None:
        """Make every commit so far durable (fsync the write-ahead log).

        A failing fsync (the disk is full or broken) is a :class:`TemporaryStoreError`: what
        was committed without a sync may be lost, so nothing may be acknowledged.
        """
        with self._connection():
            wal = Path(f"{self.path}-wal")
            try:
                fd = os.open(wal, os.O_RDONLY)
            except FileNotFoundError:  # no commit since the last checkpoint removed it
                return
            try:
                os.fsync(fd)
            except OSError as exc:
                raise TemporaryStoreError(f"cannot sync the database: {exc}") from exc
            finally:
                os.close(fd)

    def rows(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        """Rows of a query as plain dicts (of a SELECT, read beside any transaction of
        another thread; of any other statement, such as INSERT ... RETURNING, in turn)."""
        if self._in_transaction():
            return [dict(r) for r in self._in_turn(sql, params).fetchall()]
        with self._reading(sql.lstrip()[:6].upper() == "SELECT") as conn:
            return [dict(r) for r in conn.execute(sql, params).fetchall()]

    def _in_turn(self, sql: str, params: tuple | dict) -> sqlite3.Cursor:
        """One statement of this thread's transaction: the connection is this thread's
        until the transaction ends, so it is used without asking (the cheap path of the
        statements that file a mail); errors as :meth:`_connection` maps them."""
        try:
            return self.db.conn.execute(sql, params)
        except sqlite3.Error as exc:
            _raise_temporary(exc)
            raise

    @contextlib.contextmanager
    def _reading(self, select: bool) -> Iterator[sqlite3.Connection]:
        """A connection for one statement outside a transaction: for a SELECT a reading
        connection of its own for the block, so that it does not wait for another
        thread's transaction; else the writing one."""
        if not select:
            with self._connection() as conn:
                yield conn
            return
        with self._spare_lock:
            conn = self._spare.pop() if self._spare else None
        try:
            if conn is None:
                conn = self._reader()
            yield conn
        except sqlite3.Error as exc:
            _raise_temporary(exc)
            raise
        finally:
            if conn is not None:
                with self._spare_lock:
                    self._spare.append(conn)

    def _reader(self) -> sqlite3.Connection:
        """A new connection that only reads."""
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True,
                               timeout=self.busy_timeout, check_same_thread=False,
                               isolation_level=None)  # never creates a file that went
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA foreign_keys=ON")  # as the writing one says, when asked
        return conn

    def row(self, sql: str, params: tuple | dict = ()) -> dict | None:
        """The first row of a query, or None."""
        found = self.rows(sql, params)
        return found[0] if found else None

    def execute(self, sql: str, params: tuple | dict = ()) -> int:
        """Run one statement; the id of an inserted row (or rows changed)."""
        if self._in_transaction():
            cursor = self._in_turn(sql, params)
        else:
            with self._connection() as conn:
                cursor = conn.execute(sql, params)
        return cursor.lastrowid if sql.lstrip()[:6].upper() == "INSERT" else cursor.rowcount

    def insert(self, table: str, record: dict[str, Any]) -> int:
        """Insert one row into a known table; dict/list values are stored as JSON."""
        return self.execute(*insert_statement(table, record))

    def update_row(self, table: str, row_id: int, values: dict[str, Any]) -> None:
        """Change some columns of one row of a known table."""
        if table not in _TABLES:
            raise ValueError(f"unknown table {table}")
        if not values or not all(name.isidentifier() for name in values):
            raise ValueError(f"cannot update {sorted(values)} of {table}")
        assignments = ", ".join(f"{name} = ?" for name in values)
        changed = self.execute(f"UPDATE {table} SET {assignments} WHERE id = ?",  # noqa: S608
                               (*(_encode(v) for v in values.values()), row_id))
        if not changed:
            raise LookupError(f"no row {row_id} in {table}")

    def check_writable(self) -> None:
        """Raise unless a write transaction can be opened right now (for /healthz)."""
        with self.transaction():
            self.execute("UPDATE ticket_counters SET counter = counter WHERE day = ''")


def _insert_sql(table: str, columns: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A fixed INSERT statement for a table, built once from our own column list."""
    names = ", ".join(columns)
    marks = ", ".join(f":{c}" for c in columns)
    return {k: _encode(v) for k, v in columns.items()}, \
        f"INSERT INTO {table}({names}) VALUES ({marks})"  # noqa: S608 - our own names


_TABLES = frozenset({
    "contracts", "accounts", "contacts", "account_domains", "tickets", "messages",
    "attachments", "events", "outbox", "ingest", "quarantine", "imap_state",
})


def _encode(value: Any) -> Any:
    """Python values as SQLite stores them: JSON for containers, ISO 8601 UTC for times."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, datetime):
        return iso(value)
    return value


def insert_statement(table: str, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The INSERT of one row into a known table, with every column's value (defaults for
    the ones ``record`` leaves out; dict/list values as JSON); any other table or column is
    a programming error."""
    if table not in _INSERTS:
        raise ValueError(f"unknown table {table}")
    columns, sql = _INSERTS[table]
    unknown = set(record) - set(columns)
    if unknown:
        raise ValueError(f"{table} has no columns {sorted(unknown)}")
    return sql, {**columns, **{k: _encode(v) for k, v in record.items()}}


def _raise_temporary(exc: sqlite3.Error) -> None:
    """Raise a :class:`TemporaryStoreError` for a statement's error that is the database's
    or the disk's fault; return for any other (a fault in the statement: raised as it is)."""
    if _is_temporary(exc):
        raise TemporaryStoreError(f"{type(exc).__name__}: {exc}") from exc


def _is_temporary(exc: sqlite3.Error) -> bool:
    """Whether an error is the database's or the disk's fault (see :data:`TEMPORARY_CODES`)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in TEMPORARY_CODES


def _into_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Put the database into WAL mode (a no-op once it is).  Of several processes opening
    a new file at once, one switches it; SQLite answers the others' switch "database is
    locked" without waiting for its busy timeout, so the switch is tried again, a little
    later each time, until that timeout: then the busy database is a temporary failure."""
    deadline, pause = time.monotonic() + busy_timeout, 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            if time.monotonic() >= deadline:
                _raise_temporary(exc)
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.05)


def _begin_immediate(conn: sqlite3.Connection, seconds: float, busy_timeout: float) -> None:
    """Take the write lock, waiting for another process at most ``seconds`` (the busy
    timeout is set for it only when the wait for this process's lock took a part of it)."""
    if busy_timeout - seconds < 0.01:
        conn.execute("BEGIN IMMEDIATE")
        return
    conn.execute(f"PRAGMA busy_timeout = {max(0, int(seconds * 1000))}")
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")


_INSERTS = {table: _insert_sql(table, columns) for table, columns in {
    "events": {"ticket_id": None, "kind": None, "data": {}, "actor": "system",
               "created_at": None},
    "outbox": {"ticket_id": None, "kind": None, "message_id": None, "sender": None,
               "recipients": None, "raw": None, "status": "pending", "next_attempt_at": None,
               "last_error": "", "created_at": None},
    "messages": {"ticket_id": None, "direction": None, "message_id": "", "from_addr": "",
                 "from_name": "", "to_addrs": [], "subject": "", "body": "", "html": "",
                 "spool_sha256": None, "created_at": None},
    "attachments": {"message_row": None, "filename": None, "content_type": None, "size": None,
                    "sha256": None},
    "quarantine": {"sha256": None, "source": None, "error": None, "created_at": None,
                   "last_seen_at": None, "size": 0, "sender": ""},
    "tickets": {"number": None, "subject": None, "status": None, "priority": None,
                "contact_id": None, "account_id": None, "contract": None, "entitled": 0,
                "language": None, "parent_id": None, "owner": "", "created_at": None,
                "updated_at": None, "first_response_due": None, "resolution_due": None,
                "facts": {}, "missing": [], "auto_mail": 1, "status_since": None},
}.items()}
