"""The SQLite store: the only package that speaks SQL.

One connection, guarded by a lock, shared by the sources' threads and the event
loop.  Writes happen inside :meth:`Store.transaction` (``BEGIN IMMEDIATE``), so one
mail is one transaction and a second process (the CLI) waits instead of failing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from mailbot.store.schema import migrations


class TemporaryStoreError(Exception):
    """The database is busy or unavailable right now; the caller should retry later."""


def iso(moment: datetime | None) -> str | None:
    """The stored form of a timestamp: ISO 8601 in UTC."""
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="microseconds")


class Store:
    """Access to mailbot's SQLite database."""

    def __init__(self, path: Path, busy_timeout: float = 5.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=busy_timeout, check_same_thread=False,
                               isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        self.path = path
        self.db = Database(conn)
        self._lock = threading.RLock()
        with self._lock:
            migrations.apply(self.db)

    def close(self) -> None:
        """Close the connection (pending transactions are rolled back)."""
        with self._lock:
            self.db.conn.close()

    @contextlib.contextmanager
    def transaction(self, durable: bool = True) -> Iterator[Store]:
        """One atomic write; a busy database becomes :class:`TemporaryStoreError`.

        ``durable=False`` skips the fsync of this commit (WAL keeps it safe from a crash of
        the process, not from power loss): for bookkeeping whose loss only causes a resend,
        or for a batch made durable at once with :meth:`sync` before it is acknowledged.
        """
        with self._lock:
            conn = self.db.conn
            nested = conn.in_transaction
            if not nested and not durable:
                conn.execute("PRAGMA synchronous=NORMAL")
            try:
                if not nested:
                    conn.execute("BEGIN IMMEDIATE")
                yield self
                if not nested:
                    conn.execute("COMMIT")
            except BaseException as exc:
                if not nested and conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                    raise TemporaryStoreError(str(exc)) from exc
                raise
            finally:
                if not nested and not durable:
                    conn.execute("PRAGMA synchronous=FULL")

    def sync(self) -> None:
        """Make every commit so far durable (fsync the write-ahead log)."""
        with self._lock:
            wal = Path(f"{self.path}-wal")
            if wal.exists():
                fd = os.open(wal, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def rows(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        """Rows of a query as plain dicts."""
        with self._lock:
            return [dict(r) for r in self.db.conn.execute(sql, params).fetchall()]

    def row(self, sql: str, params: tuple | dict = ()) -> dict | None:
        """The first row of a query, or None."""
        found = self.rows(sql, params)
        return found[0] if found else None

    def execute(self, sql: str, params: tuple | dict = ()) -> int:
        """Run one statement; the id of an inserted row (or rows changed)."""
        with self._lock:
            cursor = self.db.conn.execute(sql, params)
            return cursor.lastrowid if sql.lstrip().upper().startswith("INSERT") \
                else cursor.rowcount

    def insert(self, table: str, record: dict[str, Any]) -> int:
        """Insert one row into a known table; dict/list values are stored as JSON."""
        if table not in _INSERTS:
            raise ValueError(f"unknown table {table}")
        columns, sql = _INSERTS[table]
        unknown = set(record) - set(columns)
        if unknown:
            raise ValueError(f"{table} has no columns {sorted(unknown)}")
        values = {**columns, **{k: _encode(v) for k, v in record.items()}}
        with self._lock:
            return self.db.conn.execute(sql, values).lastrowid

    def update_row(self, table: str, row_id: int, values: dict[str, Any]) -> None:
        """Change some columns of one row of a known table."""
        if table not in _TABLES:
            raise ValueError(f"unknown table {table}")
        with self._lock:
            self.db[table].update(row_id, {k: _encode(v) for k, v in values.items()})

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


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


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
    "quarantine": {"sha256": None, "source": None, "error": None, "created_at": None},
    "tickets": {"number": None, "subject": None, "status": None, "priority": None,
                "contact_id": None, "account_id": None, "contract": None, "entitled": 0,
                "language": None, "parent_id": None, "owner": "", "created_at": None,
                "updated_at": None, "first_response_due": None, "resolution_due": None,
                "facts": {}, "missing": []},
}.items()}
