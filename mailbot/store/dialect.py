"""What differs between the two engines of the store: SQLite and PostgreSQL.

The query modules write one SQL text for both engines in SQLite's spelling (``?`` and
``:name`` placeholders, ON CONFLICT, RETURNING, ISO 8601 text for times, JSON text for
lists); the few constructs that are spelled differently come from a :class:`Dialect`
(``store.dialect``).  On PostgreSQL the placeholders are rewritten once per statement text
(:func:`to_pyformat`) and the migrations' DDL is translated (:func:`postgres_ddl`): text
columns collate byte-wise ("C"), as SQLite compares, so ISO times and Message-ID ranges
sort the same on both.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite://"


@dataclass(frozen=True)
class Dialect:
    """The spellings of one engine for what SQLite and PostgreSQL write differently."""

    name: str
    like: str  # case-insensitive LIKE (SQLite's LIKE is, for ASCII)
    greatest: str  # the larger of two values, as a scalar function
    no_limit: int | None  # a LIMIT that does not limit
    # After a SELECT that picks a row to claim: lock it, passing over rows other
    # transactions hold (PostgreSQL); SQLite's writers are one at a time and need none.
    skip_locked: str = ""

    def each(self, param: str, cast: str = "bigint") -> str:
        """A SELECT of the items of a JSON array (a parameter or a column) as ``value``;
        ``cast`` is their type on PostgreSQL (``bigint`` for ids, ``text``)."""
        if self.name == "sqlite":
            return f"SELECT value FROM json_each({param})"  # noqa: S608
        return (f"SELECT CAST(value AS {cast}) AS value "  # noqa: S608
                f"FROM jsonb_array_elements_text(CAST({param} AS jsonb)) AS j(value)")

    def json_field(self, column: str, key: str) -> str:
        """The text of one top-level key of a JSON object column (``key``: SQL text)."""
        if self.name == "sqlite":
            return f"json_extract({column}, '$.' || {key})"
        return f"(CAST({column} AS jsonb) ->> {key})"

    def indexed_by(self, index: str) -> str:
        """The clause that makes SQLite read a table through ``index`` (after the table's
        name): without statistics its planner prefers any equality index to one that gives
        the order; PostgreSQL's planner knows its tables' statistics and needs none."""
        return f"INDEXED BY {index}" if self.name == "sqlite" else ""

    def contains(self, haystack: str, needle: str) -> str:
        """Whether the text ``needle`` occurs in ``haystack`` (both SQL)."""
        function = "instr" if self.name == "sqlite" else "strpos"
        return f"{function}({haystack}, {needle}) > 0"


SQLITE = Dialect(name="sqlite", like="LIKE", greatest="MAX", no_limit=-1)
POSTGRES = Dialect(name="postgresql", like="ILIKE", greatest="GREATEST", no_limit=None,
                   skip_locked="FOR UPDATE SKIP LOCKED")


class BadStoreURL(ValueError):
    """A ``[store] url`` this mailbot cannot open; the message says why."""


def is_postgres(url: str | Path) -> bool:
    """Whether ``url`` names a PostgreSQL database (else it is an SQLite file)."""
    return isinstance(url, str) and url.startswith(POSTGRES_SCHEMES)


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///path`` URL (an absolute path)."""
    rest = url.removeprefix(SQLITE_SCHEME)
    if rest == url or not rest.startswith("/") or rest == "/":
        raise BadStoreURL(f"{url!r}: write sqlite:/// and an absolute path, "
                          "e.g. sqlite:///var/lib/mailbot/mailbot.sqlite3")
    return Path(rest)


def check_postgres(url: str) -> None:
    """Refuse a PostgreSQL URL without host or database, or one libpq cannot parse."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is none
    except ValueError as exc:
        raise BadStoreURL(f"not a PostgreSQL URL: {exc}") from exc
    if not parts.hostname:
        raise BadStoreURL("names no host: write postgresql://user:password@host:5432/db")
    if not parts.path.strip("/"):
        raise BadStoreURL("names no database: write postgresql://user:password@host:5432/db")


def has_password(url: str) -> bool:
    """Whether a PostgreSQL URL carries a password."""
    return urlsplit(url).password is not None


def with_password(url: str, password: str) -> str:
    """A PostgreSQL URL with ``password`` written in (as it is without one)."""
    if not password:
        return url
    parts = urlsplit(url)
    user = quote(parts.username or "", safe="")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


@functools.lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """A statement in SQLite's placeholders (``?``, ``:name``) in psycopg's (``%s``,
    ``%(name)s``), every ``%`` doubled (in quoted strings too: psycopg reads them); no
    placeholder is looked for in quoted strings or ``::`` casts."""
    return _TOKENS.sub(_pyformat_token, sql)


_TOKENS = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|::|\?|(?<![:\w]):(\w+)|%")


_REWRITTEN = {"?": "%s", "%": "%%"}


def _pyformat_token(match: re.Match) -> str:
    if match.group(1):
        return f"%({match.group(1)})s"
    token = match.group(0)
    return _REWRITTEN.get(token) or token.replace("%", "%%")


_DDL = (
    (re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\bTEXT\b"), 'TEXT COLLATE "C"'),
)


def postgres_ddl(sql: str) -> str:
    """A migration's SQLite DDL for PostgreSQL: 64-bit ids generated by the database, bytea
    for blobs, text compared byte-wise as SQLite does."""
    for pattern, replacement in _DDL:
        sql = pattern.sub(replacement, sql)
    return sql
