"""Moving an SQLite installation into PostgreSQL: `mailbot migrate --to postgresql://...`.

Everything happens in one PostgreSQL transaction, so the target holds the whole installation
or, after any failure, exactly what it held before (a new database gets the schema in that
transaction too).  The target must be empty or at the current schema with no row in any of
mailbot's tables, and no mailbot may be writing to it: a move never merges.

The SQLite database is read under its write lock (``BEGIN IMMEDIATE``, rolled back at the
end): one consistent moment, and nothing is filed into it while it is copied (a `mailbot
ingest` meanwhile gets a temporary failure and its MTA retries).  Nothing is written to it.

What is copied: every table of the schema as the SQLite database lists it (the migrations'
bookkeeping aside: the target keeps its own), in the order of their foreign keys, rows in
id order with their ids, through COPY; then each identity sequence is moved past the
highest id.  Then every blob of the data directory (``spool/`` and ``files/``, referred to
or not, as a backup takes them) into the target's blob tables, a chunk at a time, hashed on
the way.  A file whose bytes do not match its name fails the move (content addressing must
not start with a lie); a file a row refers to that is not there is reported with the rows,
and the move goes on: the target is as whole as the installation, and nothing could bring
those bytes back.

Before the commit the target is verified as it stands in the transaction: each table's row
count against the SQLite database's, each blob present with its size, and the SHA-256 of
its bytes read back from the target equal to its name.
"""

from __future__ import annotations

import contextlib
import graphlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from sqlite_utils import Database

from mailbot.store import TemporaryStoreError, blobs, iso, schema
from mailbot.store.backup import NEEDED, SHOWN_PROBLEMS
from mailbot.store.postgres import WRITE_LOCK

# The target's blob tables (migration m011): filled from the data directory's files, not
# copied as rows (an SQLite store keeps them empty).
BLOB_TABLES = ("blob_chunks", "blobs")
# Rows of a referring table named per missing blob.
SHOWN_ROWS = 3


class TransferError(Exception):
    """The move failed or was refused; nothing was written to the target."""


class TargetNotEmpty(TransferError):
    """The target holds rows of mailbot's tables (or a mailbot writes to it)."""


class TargetSchema(TransferError):
    """The target has tables, but not at this mailbot's schema."""


class Unreachable(TransferError):
    """The target database cannot be connected to; the message has libpq's reason."""


class Damaged(TransferError):
    """A blob file's bytes do not match its name, or the target did not verify."""


@dataclass
class Moved:
    """What a move copied and verified."""

    rows: dict[str, int] = field(default_factory=dict)  # per table, in copy order
    blobs: dict[str, int] = field(default_factory=dict)  # per kind: how many
    size: dict[str, int] = field(default_factory=dict)  # per kind: bytes
    missing: list[str] = field(default_factory=list)  # referred-to blobs not on disk
    seconds: float = 0.0


def move(database: Path, data_dir: Path, url: str, busy_timeout: float = 5.0) -> Moved:
    """Copy the SQLite ``database`` and the blobs of ``data_dir`` into the PostgreSQL
    database at ``url``, verified, in one transaction (see the module).

    Raises :class:`~mailbot.store.SchemaMismatch` for an SQLite database at another schema,
    :class:`TransferError` (a subclass saying which refusal) when the target is not
    acceptable or the copy does not verify, :class:`TemporaryStoreError` when either
    database is busy or the connection is lost; OSError when a file cannot be read.
    """
    started = time.monotonic()
    source = _open_source(database, busy_timeout)
    try:
        with _connected(url, busy_timeout) as target:
            moved = _copy(source, data_dir, target)
    finally:
        source.close()  # ends the read (a rollback: nothing was written)
    moved.seconds = time.monotonic() - started
    return moved


def shown(url: str) -> str:
    """A PostgreSQL URL as it may be printed: without its password (nor one given as a
    query parameter)."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    host = parts.netloc.rpartition("@")[2]
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    return urlunsplit(parts._replace(netloc=user + host, query=query))


# -- the source --------------------------------------------------------------------------------

def _open_source(database: Path, busy_timeout: float) -> sqlite3.Connection:
    """The SQLite database under its write lock, checked to be at the current schema."""
    conn = sqlite3.connect(f"{database.resolve().as_uri()}?mode=rw", uri=True,
                           timeout=busy_timeout, isolation_level=None)
    try:
        found = schema.version(Database(conn))
        if not found.current:
            raise schema.SchemaMismatch(found)
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        conn.close()
        raise TemporaryStoreError(f"{database}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _source_tables(source: sqlite3.Connection) -> list[str]:
    """The SQLite database's tables in an order that copies each after the ones it refers to
    (its own rows may refer to each other: PostgreSQL checks a COPY at its end)."""
    names = {r[0] for r in source.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                          "AND name NOT LIKE 'sqlite_%'")}
    names -= {schema.migrations.migrations_table, *BLOB_TABLES}
    refers = {name: {r[2] for r in source.execute(f"PRAGMA foreign_key_list({name})")}
              & names - {name} for name in sorted(names)}
    return list(graphlib.TopologicalSorter(refers).static_order())


def _source_columns(source: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in source.execute(f"PRAGMA table_info({table})")]


def _count(source: sqlite3.Connection, table: str) -> int:
    return source.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608


def _folders(data_dir: Path) -> Iterator[tuple[str, list[os.DirEntry]]]:
    """The blob files of the data directory a folder at a time, ordered by kind and hash (as
    the target's primary keys order them: byte-wise), only whole ones (no temporary files):
    a folder's list in memory, never all of them."""
    for kind in sorted((blobs.SPOOL, blobs.FILES)):
        root = data_dir / kind
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if len(p.name) == 2 and p.is_dir()):
            with os.scandir(folder) as entries:
                files = sorted((e for e in entries if blobs.is_digest(e.name)
                                and e.name[:2] == folder.name and e.is_file()),
                               key=lambda e: e.name)
            yield kind, files


def _missing(source: sqlite3.Connection, data_dir: Path) -> list[str]:
    """The blobs rows refer to that are not in the data directory, each with those rows."""
    found = []
    for kind, columns in NEEDED.items():
        for table, column in columns:
            rows: dict[str, list[int]] = {}
            for rowid, sha in source.execute(
                    f"SELECT rowid, {column} FROM {table} "  # noqa: S608 - our names
                    f"WHERE {column} IS NOT NULL AND {column} != '' ORDER BY rowid"):
                if not blobs.is_digest(sha) or not (data_dir / kind / sha[:2] / sha).is_file():
                    rows.setdefault(sha, []).append(rowid)
            found += [_missing_line(kind, sha, table, ids) for sha, ids in rows.items()]
    return found


def _missing_line(kind: str, sha: str, table: str, ids: list[int]) -> str:
    return f"{kind}/{sha[:2]}/{sha}: referred to by {table} row {_some(ids)}"


def _damaged_line(source: sqlite3.Connection, kind: str, path: Path) -> str:
    """A damaged file and the rows that refer to it."""
    referrers = []
    for table, column in NEEDED[kind]:
        ids = [r[0] for r in source.execute(
            f"SELECT rowid FROM {table} WHERE {column} = ? "  # noqa: S608 - our names
            "ORDER BY rowid LIMIT ?", (path.name, SHOWN_ROWS + 1))]
        if ids:
            referrers.append(f"{table} row {_some(ids)}")
    return f"{path} is damaged (its content does not match its SHA-256; " \
        f"referred to by {', '.join(referrers) or 'no row'})"


def _some(ids: list[int]) -> str:
    """Row ids as listed: the first few, then that there are more."""
    more = " and more" if len(ids) > SHOWN_ROWS else ""
    return ", ".join(str(i) for i in ids[:SHOWN_ROWS]) + more


# -- the target --------------------------------------------------------------------------------

@contextlib.contextmanager
def _connected(url: str, busy_timeout: float) -> Iterator[psycopg.Connection]:
    """A connection to the target; its errors as the store's (a fault of the server or the
    network is temporary, a refused statement is a :class:`TransferError`)."""
    try:
        conn = psycopg.connect(url, autocommit=True, row_factory=dict_row,
                               connect_timeout=max(1, round(busy_timeout)),
                               application_name="mailbot migrate")
    except psycopg.Error as exc:
        raise Unreachable(f"cannot connect to the target database: "
                          f"{_redacted(str(exc).strip(), url)}") from exc
    try:
        yield conn
    except psycopg.OperationalError as exc:
        raise TemporaryStoreError(f"the target database failed: {exc}") from exc
    except psycopg.Error as exc:
        raise TransferError(f"the target database refused the copy: {_reason(exc)}") from exc
    finally:
        conn.close()


def _redacted(text: str, url: str) -> str:
    """``text`` without the URL's password, as written or decoded (libpq quotes a part of
    the URL it cannot read)."""
    parts = urlsplit(url)
    written = parts.netloc.rpartition("@")[0].partition(":")[2]
    given = [v for k, v in parse_qsl(parts.query) if k == "password"]
    for secret in sorted({written, unquote(written), *given} - {""}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _reason(exc: psycopg.Error) -> str:
    """An error of the server with its detail and where it happened (a COPY's line)."""
    diag = exc.diag
    return "; ".join(p for p in (str(exc).strip(), diag.message_detail, diag.context) if p)


def _copy(source: sqlite3.Connection, data_dir: Path, target: psycopg.Connection) -> Moved:
    """The whole move inside one transaction of the target (see the module)."""
    moved = Moved()
    with target.transaction():
        if not target.execute("SELECT pg_try_advisory_xact_lock(%s) AS got",
                              (WRITE_LOCK,)).fetchone()["got"]:
            raise TargetNotEmpty("a mailbot is writing to the target database right now")
        _prepare_target(target)
        types = _target_types(target)
        for table in _source_tables(source):
            moved.rows[table] = _copy_table(source, target, table, types)
        _advance_identities(target)
        moved.missing = _missing(source, data_dir)
        listed, damaged = _copy_blobs(target, data_dir, moved)
        if damaged:
            raise Damaged(_listed([_damaged_line(source, kind, path) for kind, path in damaged])
                          + ": restore the file(s) from a backup, or delete them to move "
                          "without them")
        problems = _count_problems(source, target, moved.rows)
        problems += _blob_problems(target, sum(moved.blobs.values()), listed)
        if problems:
            raise Damaged("the copy did not verify: " + _listed(problems))
    return moved


def _prepare_target(target: psycopg.Connection) -> None:
    """Give a new, empty database the schema; refuse one at another schema, or holding rows
    of any of mailbot's tables."""
    if schema.postgres_is_empty(target):
        schema.postgres_apply(target)
        return
    found = schema.compare(schema.postgres_applied(target))
    if not found.current:
        raise TargetSchema(_schema_refusal(found))
    holding = [t for t in _target_tables(target) if target.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {}) AS rows").format(sql.Identifier(t)))
        .fetchone()["rows"]]
    if holding:
        raise TargetNotEmpty(f"the target database holds rows already (in "
                             f"{', '.join(holding)}): a move never merges into a database in "
                             "use; give it a new, empty database")


def _schema_refusal(found: schema.SchemaVersion) -> str:
    """Why a target with tables at another schema is refused, and what to do."""
    fresh = "move into a new, empty database"
    if not found.found:
        return f"the target database holds tables that are not mailbot's: {fresh}"
    head = f"the target database is at schema {found.found}, this mailbot needs {found.needed}"
    if found.unknown:
        return f"{head}: it was made by a newer mailbot ({', '.join(found.unknown)}): {fresh}"
    return f"{head}: {fresh}, or run `mailbot migrate` with [store] url set to it first"


def _target_tables(target: psycopg.Connection) -> list[str]:
    """mailbot's tables in the target (its migrations' bookkeeping aside)."""
    return [r["table_name"] for r in target.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = "
        "current_schema() AND table_type = 'BASE TABLE' AND table_name != %s "
        "ORDER BY table_name", (schema.POSTGRES_APPLIED,))]


def _target_types(target: psycopg.Connection) -> dict[tuple[str, str], str]:
    """The PostgreSQL type of each column of the target's tables (int8, text, bytea)."""
    return {(r["table_name"], r["column_name"]): r["udt_name"] for r in target.execute(
        "SELECT table_name, column_name, udt_name FROM information_schema.columns "
        "WHERE table_schema = current_schema()")}


def _copy_table(source: sqlite3.Connection, target: psycopg.Connection, table: str,
                types: dict[tuple[str, str], str]) -> int:
    """Copy one table's rows in id (rowid) order with COPY; how many."""
    columns = _source_columns(source, table)
    lacking = [c for c in columns if (table, c) not in types]
    if lacking:
        raise TargetSchema(f"the target's table {table} lacks {', '.join(lacking)}")
    kinds = [types[table, c] for c in columns]
    binary = [i for i, kind in enumerate(kinds) if kind == "bytea"]
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)))
    copied = 0
    names = ", ".join(columns)
    with target.cursor().copy(statement) as copy:
        copy.set_types(kinds)
        for rowid, *row in source.execute(
                f"SELECT rowid, {names} FROM {table} ORDER BY rowid"):  # noqa: S608
            try:
                copy.write_row(_as_stored(row, binary))
            except (TypeError, ValueError) as exc:  # a value of a type the column is not
                raise TransferError(f"table {table} row {rowid}: a value its PostgreSQL "
                                    f"column cannot take ({exc})") from exc
            copied += 1
    return copied


def _as_stored(row: list, binary: list[int]) -> list:
    """A row as PostgreSQL's columns take it: text that SQLite kept in a BLOB column (it
    keeps what it is given) as its UTF-8 bytes."""
    for i in binary:
        if isinstance(row[i], str):
            row[i] = row[i].encode()
    return row


def _advance_identities(target: psycopg.Connection) -> None:
    """Move each identity sequence past its table's highest id, so new rows get new ids."""
    for r in target.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE "
            "table_schema = current_schema() AND is_identity = 'YES' AND table_name != %s",
            (schema.POSTGRES_APPLIED,)).fetchall():
        table, column = sql.Identifier(r["table_name"]), sql.Identifier(r["column_name"])
        target.execute(sql.SQL(
            "SELECT setval(pg_get_serial_sequence({}, {}), MAX({})) FROM {} "
            "HAVING MAX({}) IS NOT NULL").format(
                sql.Literal(r["table_name"]), sql.Literal(r["column_name"]), column, table,
                column))


def _copy_blobs(target: psycopg.Connection, data_dir: Path, moved: Moved,
                ) -> tuple[str, list[tuple[str, Path]]]:
    """Write every blob file as chunks and a ``blobs`` row (the layout of
    :mod:`mailbot.store.pgblobs`), hashed as it is read, a folder at a time, counted into
    ``moved``.  Returns a SHA-256 of the list of blobs written (kind, hash and size of each,
    in order) and the files whose bytes do not match their names (the caller fails the
    move for them)."""
    listed = hashlib.sha256()
    damaged: list[tuple[str, Path]] = []
    for kind, files in _folders(data_dir):
        written = _copy_chunks(target, kind, files, damaged)
        rows = sql.SQL("COPY blobs (kind, sha256, size, created_at) FROM STDIN (FORMAT BINARY)")
        with target.cursor().copy(rows) as copy:
            copy.set_types(["text", "text", "int8", "text"])
            for sha, size, made in written:
                copy.write_row((kind, sha, size, made))
                listed.update(f"{kind}/{sha}:{size}\n".encode())
                moved.blobs[kind] = moved.blobs.get(kind, 0) + 1
                moved.size[kind] = moved.size.get(kind, 0) + size
    return listed.hexdigest(), damaged


def _copy_chunks(target: psycopg.Connection, kind: str, files: list[os.DirEntry],
                 damaged: list[tuple[str, Path]]) -> list[tuple[str, int, str]]:
    """The chunks of one folder's files, with COPY; each file's hash, size and time."""
    written = []
    chunks = sql.SQL("COPY blob_chunks (kind, sha256, seq, data) FROM STDIN (FORMAT BINARY)")
    with target.cursor().copy(chunks) as copy:
        copy.set_types(["text", "text", "int8", "bytea"])
        for entry in files:
            digest, size = hashlib.sha256(), 0
            with open(entry.path, "rb") as handle:
                for seq, chunk in enumerate(iter(lambda h=handle: h.read(blobs.CHUNK_BYTES),
                                                 b"")):
                    digest.update(chunk)
                    size += len(chunk)
                    copy.write_row((kind, entry.name, seq, chunk))
            if digest.hexdigest() != entry.name:
                damaged.append((kind, Path(entry.path)))
            made = datetime.fromtimestamp(entry.stat().st_mtime, UTC)
            written.append((entry.name, size, iso(made)))
    return written


def _count_problems(source: sqlite3.Connection, target: psycopg.Connection,
                    rows: dict[str, int]) -> list[str]:
    """Tables whose row count in the target differs from the SQLite database's."""
    problems = []
    for table in rows:
        counted = target.execute(sql.SQL("SELECT COUNT(*) AS n FROM {}").format(
            sql.Identifier(table))).fetchone()["n"]
        expected = _count(source, table)
        if counted != expected:
            problems.append(f"table {table}: {counted} rows in the target, {expected} in the "
                            "SQLite database")
    return problems


def _blob_problems(target: psycopg.Connection, count: int, listed: str) -> list[str]:
    """What is wrong with the blobs read back from the target: their list (kind, hash and
    size of each) other than the files written, or a blob whose chunks do not add up to its
    size or whose bytes do not hash to its name.  One pass over both tables in key order
    (server-side cursors: a few chunks in memory at a time)."""
    problems = []
    found, kept = hashlib.sha256(), 0
    with target.cursor(name="mailbot_blobs") as rows, \
            target.cursor(name="mailbot_chunks", binary=True) as chunks:
        rows.itersize, chunks.itersize = 1000, 4
        rows.execute("SELECT kind, sha256, size FROM blobs ORDER BY kind, sha256")
        chunks.execute("SELECT kind, sha256, seq, data FROM blob_chunks "
                       "ORDER BY kind, sha256, seq")
        stream = _ChunkStream(iter(chunks))
        for row in rows:
            kept += 1
            found.update(f"{row['kind']}/{row['sha256']}:{row['size']}\n".encode())
            problem = stream.check(row["kind"], row["sha256"], row["size"])
            if problem:
                problems.append(problem)
        if stream.orphans or stream.pending is not None:
            problems.append("the target holds chunks of blobs that were not written")
    if found.hexdigest() != listed:
        problems.insert(0, f"the target lists {kept} blobs, not the {count} files written")
    return problems


class _ChunkStream:
    """The target's chunks in key order, consumed blob by blob (see _blob_problems)."""

    def __init__(self, chunks: Iterator[dict]) -> None:
        self.chunks = chunks
        self.pending = next(chunks, None)
        self.orphans = 0  # chunks of no blob row

    def check(self, kind: str, sha: str, size: int) -> str:
        """Read the chunks of one blob; what is wrong with them ("" when nothing)."""
        key = (kind, sha)
        while self.pending is not None and (self.pending["kind"], self.pending["sha256"]) < key:
            self.orphans += 1
            self.pending = next(self.chunks, None)
        digest, got, seen = hashlib.sha256(), 0, 0
        whole = True
        while self.pending is not None and (self.pending["kind"], self.pending["sha256"]) == key:
            whole = whole and self.pending["seq"] == seen
            seen += 1
            digest.update(self.pending["data"])
            got += len(self.pending["data"])
            self.pending = next(self.chunks, None)
        if got != size:
            return f"{kind}/{sha}: {got} bytes read back from the target, the file has {size}"
        if not whole or digest.hexdigest() != sha:
            return f"{kind}/{sha}: the bytes read back from the target do not match its SHA-256"
        return ""


def _listed(problems: list[str]) -> str:
    more = len(problems) - SHOWN_PROBLEMS
    return "; ".join(problems[:SHOWN_PROBLEMS]) + (f"; and {more} more" if more > 0 else "")
