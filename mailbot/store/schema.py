"""The schema as an ordered list of migrations, and where a database stands against it.

A new, empty database gets every migration when first opened; an existing one is migrated
only by `mailbot migrate`.  A database's schema version is the number of migrations
applied to it; :func:`compare` judges a list of applied names against this code's (the
same judgement for any database that records the names of its applied migrations).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from mailbot.store import dialect

migrations = Migrations("mailbot")


@dataclass(frozen=True)
class SchemaVersion:
    """A database's schema against this code's: migrations applied, needed, missing, unknown."""

    found: int
    needed: int
    pending: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()  # applied by a newer mailbot: this code cannot undo them

    @property
    def current(self) -> bool:
        """Whether this code can work on the database as it is."""
        return not self.pending and not self.unknown

    def refusal(self, what: str = "the database") -> str:
        """The sentence an operator reads when this code cannot work on ``what``."""
        head = f"{what} is at schema {self.found}, this mailbot needs {self.needed}"
        if self.unknown:
            return (f"{head}: it was written by a newer mailbot ({', '.join(self.unknown)}); "
                    "install that version again, or restore a backup made with this one")
        return f"{head}: run `mailbot migrate`"


class SchemaMismatch(Exception):
    """The database is at another schema than this code's; the message says what to do."""

    def __init__(self, version: SchemaVersion, what: str = "the database") -> None:
        super().__init__(version.refusal(what))
        self.version = version


@functools.cache
def known() -> tuple[str, ...]:
    """The names of this code's migrations, in the order they apply."""
    return tuple(m.name for m in migrations.pending(Database(memory=True)))


def compare(applied: Sequence[str]) -> SchemaVersion:
    """Where a database with these migrations applied stands against this code."""
    done = set(applied)
    return SchemaVersion(found=len(done), needed=len(known()),
                         pending=tuple(n for n in known() if n not in done),
                         unknown=tuple(n for n in applied if n not in known()))


def version(db: Database) -> SchemaVersion:
    """The schema version of an SQLite database (read only)."""
    return compare([m.name for m in migrations.applied(db)])


def is_empty(db: Database) -> bool:
    """Whether a database has no tables at all: a new one, to be given the whole schema."""
    return not db.table_names()


@migrations()
def m001_core(db: Database) -> None:
    """Accounts, contacts, tickets, messages, events, outbox, ingest records, quarantine."""
    _run(db, """
        CREATE TABLE contracts (
            name TEXT PRIMARY KEY,
            tier TEXT NOT NULL DEFAULT 'none',
            raise_levels INTEGER,
            calendar TEXT NOT NULL DEFAULT '',
            description TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE accounts (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            customer_number TEXT UNIQUE,
            domains TEXT NOT NULL DEFAULT '[]',
            contract TEXT REFERENCES contracts(name),
            language TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE contacts (
            id INTEGER PRIMARY KEY,
            address TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL DEFAULT '',
            account_id INTEGER REFERENCES accounts(id),
            phone TEXT NOT NULL DEFAULT '',
            language TEXT NOT NULL DEFAULT '',
            bounced_at TEXT,
            bounce_reason TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE account_domains (
            domain TEXT PRIMARY KEY,
            account_id INTEGER NOT NULL REFERENCES accounts(id)
        );
        CREATE TABLE ticket_counters (
            day TEXT PRIMARY KEY,
            counter INTEGER NOT NULL
        );
        CREATE TABLE tickets (
            id INTEGER PRIMARY KEY,
            number TEXT NOT NULL UNIQUE,
            subject TEXT NOT NULL,
            status TEXT NOT NULL,
            priority TEXT NOT NULL,
            contact_id INTEGER REFERENCES contacts(id),
            account_id INTEGER REFERENCES accounts(id),
            contract TEXT,
            entitled INTEGER NOT NULL DEFAULT 0,
            language TEXT NOT NULL,
            parent_id INTEGER REFERENCES tickets(id),
            owner TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            closed_at TEXT,
            first_response_due TEXT,
            first_response_at TEXT,
            first_response_met INTEGER,
            update_due TEXT,
            resolution_due TEXT,
            facts TEXT NOT NULL DEFAULT '{}',
            missing TEXT NOT NULL DEFAULT '[]',
            escalated_at TEXT,
            escalation_phone TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX tickets_status ON tickets(status);
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            ticket_id INTEGER NOT NULL REFERENCES tickets(id),
            direction TEXT NOT NULL,
            message_id TEXT NOT NULL DEFAULT '',
            from_addr TEXT NOT NULL DEFAULT '',
            from_name TEXT NOT NULL DEFAULT '',
            to_addrs TEXT NOT NULL DEFAULT '[]',
            subject TEXT NOT NULL DEFAULT '',
            body TEXT NOT NULL DEFAULT '',
            html TEXT NOT NULL DEFAULT '',
            spool_sha256 TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX messages_ticket ON messages(ticket_id);
        CREATE INDEX messages_message_id ON messages(message_id);
        CREATE TABLE attachments (
            id INTEGER PRIMARY KEY,
            message_row INTEGER NOT NULL REFERENCES messages(id),
            filename TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL
        );
        CREATE INDEX attachments_message ON attachments(message_row);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            ticket_id INTEGER NOT NULL REFERENCES tickets(id),
            kind TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}',
            actor TEXT NOT NULL DEFAULT 'system',
            created_at TEXT NOT NULL,
            notified_at TEXT
        );
        CREATE INDEX events_ticket ON events(ticket_id);
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            ticket_id INTEGER REFERENCES tickets(id),
            kind TEXT NOT NULL,
            message_id TEXT NOT NULL,
            sender TEXT NOT NULL,
            recipients TEXT NOT NULL,
            raw BLOB NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            last_error TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            sent_at TEXT
        );
        CREATE INDEX outbox_due ON outbox(status, next_attempt_at);
        CREATE INDEX outbox_message_id ON outbox(message_id);
        CREATE TABLE ingest (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            message_id TEXT NOT NULL DEFAULT '',
            outcome TEXT NOT NULL,
            ticket_id INTEGER REFERENCES tickets(id),
            source TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX ingest_message_id ON ingest(message_id);
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL,
            source TEXT NOT NULL,
            error TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'held',
            created_at TEXT NOT NULL,
            retried_at TEXT
        );
        CREATE TABLE imap_state (
            mailbox TEXT PRIMARY KEY,
            uidvalidity INTEGER NOT NULL
        );
        """)


@migrations()
def m002_contract_targets(db: Database) -> None:
    """Contracts may carry their own response targets per priority (JSON)."""
    db.execute("ALTER TABLE contracts ADD COLUMN targets TEXT NOT NULL DEFAULT '{}'")


@migrations()
def m003_outbox_ack_index(db: Database) -> None:
    """The per-sender acknowledgement rate limit looks rows up by kind, recipient and time."""
    db.execute("CREATE INDEX outbox_ack ON outbox(kind, recipients, created_at)")


@migrations()
def m004_outbox_claims(db: Database) -> None:
    """A sender claims a row with its name and a lease; `outbox retry` restarts a lifetime."""
    db.execute("ALTER TABLE outbox ADD COLUMN claimed_by TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE outbox ADD COLUMN claimed_until TEXT")
    db.execute("ALTER TABLE outbox ADD COLUMN retried_at TEXT")


def _run(db: Database, script: str) -> None:
    """Execute each statement on its own: executescript() would commit mid-migration."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


@migrations()
def m005_spam_held(db: Database) -> None:
    """Mails the filter in front called spam, held until released, deleted or expired;
    the spool's users are looked up by hash when a held mail is forgotten."""
    _run(db, """
        CREATE TABLE spam_held (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            source TEXT NOT NULL,
            message_id TEXT NOT NULL DEFAULT '',
            from_addr TEXT NOT NULL DEFAULT '',
            subject TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX spam_held_created ON spam_held(created_at);
        CREATE INDEX messages_spool ON messages(spool_sha256)
        """)


@migrations()
def m006_web_forms_used(db: Database) -> None:
    """Customer forms already sent (single use), kept until their signed field expires."""
    _run(db, """
        CREATE TABLE web_forms_used (
            form_id TEXT PRIMARY KEY,
            expires_at TEXT NOT NULL
        );
        CREATE INDEX web_forms_used_expiry ON web_forms_used(expires_at)
        """)


@migrations()
def m007_ticket_auto_mail(db: Database) -> None:
    """Whether a ticket's contact may get automatic mail (not when it came from a robot or a
    null envelope sender: RFC 3834)."""
    db.execute("ALTER TABLE tickets ADD COLUMN auto_mail INTEGER NOT NULL DEFAULT 1")


@migrations()
def m008_quarantine_copies(db: Database) -> None:
    """One quarantine entry per held mail: copies counted, last seen, size and sender."""
    _run(db, """
        ALTER TABLE quarantine ADD COLUMN copies INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE quarantine ADD COLUMN last_seen_at TEXT;
        ALTER TABLE quarantine ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE quarantine ADD COLUMN sender TEXT NOT NULL DEFAULT '';
        CREATE INDEX quarantine_sha ON quarantine(sha256, status)
        """)


@migrations()
def m009_ticket_references(db: Database) -> None:
    """Rows that refer to a ticket or a contact, found by index: deleting a ticket or a
    contact (retention, erasure) checks each referring table, which scanned them whole."""
    _run(db, """
        CREATE INDEX outbox_ticket ON outbox(ticket_id);
        CREATE INDEX ingest_ticket ON ingest(ticket_id);
        CREATE INDEX tickets_parent ON tickets(parent_id);
        CREATE INDEX tickets_contact ON tickets(contact_id)
        """)


@migrations()
def m010_work_order(db: Database) -> None:
    """The agents' work list in index order: the open tickets (only they are in the index)
    by priority, entitlement, response deadline and age, so a page of it is read, not the
    whole desk sorted (`mailbot tickets list`, the admin page)."""
    _run(db, """
        CREATE INDEX tickets_work_order ON tickets(
            (CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2
             ELSE 3 END),
            entitled DESC, (first_response_due IS NULL), first_response_due, id)
        WHERE status IN ('new', 'open', 'waiting')
        """)


@migrations()
def m011_blobs(db: Database) -> None:
    """Raw mails and attachments in the database of a PostgreSQL store (kind "spool" or
    "files"): chunks of about a megabyte, and a row per blob written after its last chunk,
    its presence.  An SQLite store keeps them as files; its tables stay empty."""
    _run(db, """
        CREATE TABLE blob_chunks (
            kind TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            seq INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (kind, sha256, seq)
        );
        CREATE TABLE blobs (
            kind TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (kind, sha256)
        )
        """)


@migrations()
def m012_job_runs(db: Database) -> None:
    """The last tick each scheduled job ran for: of several nodes on one database, the one
    that advances a job's tick runs it, the others pass (once per tick across the cluster)."""
    db.execute("CREATE TABLE job_runs (name TEXT PRIMARY KEY, tick INTEGER NOT NULL)")


@migrations()
def m013_job_lookups(db: Database) -> None:
    """What the scheduler's jobs look for, found by index: the tickets whose deadline comes
    up, those in a status since a moment (``status_since``, set when a ticket enters its
    status; older tickets get the moment of their last status event, else their creation),
    and the status events no customer was told of.  Every round read every open ticket and
    scanned every event before: its memory and time grew with the desk.  And the
    attachments by hash: retention and erasure ask which files nothing refers to any more."""
    _run(db, """
        ALTER TABLE tickets ADD COLUMN status_since TEXT;
        UPDATE tickets SET status_since = COALESCE((SELECT MAX(e.created_at) FROM events e
            WHERE e.ticket_id = tickets.id AND e.kind = 'status'), created_at);
        CREATE INDEX tickets_status_since ON tickets(status, status_since, id);
        CREATE INDEX tickets_first_response_due ON tickets(first_response_due, id)
            WHERE status IN ('new', 'open') AND first_response_at IS NULL;
        CREATE INDEX tickets_update_due ON tickets(update_due, id)
            WHERE status IN ('new', 'open') AND update_due IS NOT NULL;
        CREATE INDEX events_status_pending ON events(ticket_id, id)
            WHERE kind = 'status' AND notified_at IS NULL;
        CREATE INDEX attachments_sha256 ON attachments(sha256)
        """)


@migrations()
def m014_told_stages(db: Database) -> None:
    """What the jobs told already, and what is still to come, on the ticket: the deadline
    whose breach the agents were told of (``first_response_told``, ``update_told``: the
    deadline's value then), taken from the events, and when a waiting ticket's customer is
    reminded (``remind_at``; a ticket waiting before gets the start of its stay, unless it
    was reminded of it: the reminder job works out the moment the first time it looks); the
    indexes of the deadlines and of the reminders hold only what is still to tell.  Told
    breaches and sent reminders stayed in the indexes before: every round visited each of
    them again, a cost that grew with a desk's backlog, and a waiting ticket was read every
    round from N - 1 calendar days on until N business days had passed."""
    data = _json_field(db)
    _run(db, f"""
        ALTER TABLE tickets ADD COLUMN first_response_told TEXT;
        ALTER TABLE tickets ADD COLUMN update_told TEXT;
        ALTER TABLE tickets ADD COLUMN remind_at TEXT;
        UPDATE tickets SET first_response_told = first_response_due WHERE EXISTS (SELECT 1
            FROM events e WHERE e.ticket_id = tickets.id AND e.kind = 'deadline_breached'
            AND {data("deadline")} = 'first_response'
            AND {data("due")} = tickets.first_response_due);
        UPDATE tickets SET update_told = update_due WHERE EXISTS (SELECT 1
            FROM events e WHERE e.ticket_id = tickets.id AND e.kind = 'deadline_breached'
            AND {data("deadline")} = 'update' AND {data("due")} = tickets.update_due);
        UPDATE tickets SET remind_at = status_since WHERE status = 'waiting' AND NOT EXISTS (
            SELECT 1 FROM events e WHERE e.ticket_id = tickets.id
            AND e.kind = 'waiting_reminder' AND {data("since")} = tickets.status_since);
        DROP INDEX tickets_first_response_due;
        CREATE INDEX tickets_first_response_due ON tickets(first_response_due, id)
            WHERE status IN ('new', 'open') AND first_response_at IS NULL
            AND COALESCE(first_response_told, '') <> first_response_due;
        DROP INDEX tickets_update_due;
        CREATE INDEX tickets_update_due ON tickets(update_due, id)
            WHERE status IN ('new', 'open') AND update_due IS NOT NULL
            AND COALESCE(update_told, '') <> update_due;
        CREATE INDEX tickets_remind_at ON tickets(remind_at, id)
            WHERE status = 'waiting' AND remind_at IS NOT NULL
        """)  # noqa: S608 - the JSON reads are ours


def _json_field(db: Database) -> Callable[[str], str]:
    """How a migration reads one key of an event's data on this database's engine."""
    engine = dialect.SQLITE if isinstance(db, Database) else dialect.POSTGRES
    return lambda key: engine.json_field("e.data", f"'{key}'")


# -- the same migrations on PostgreSQL -------------------------------------------------------

# Where a PostgreSQL database records its applied migrations (SQLite's: _sqlite_migrations).
POSTGRES_APPLIED = "mailbot_migrations"


class _PostgresDDL:
    """What a migration is handed on PostgreSQL: ``execute`` runs its DDL translated."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str) -> None:
        """Run one statement of a migration, in PostgreSQL's types."""
        self.conn.execute(dialect.postgres_ddl(sql))


def postgres_is_empty(conn: Any) -> bool:
    """Whether a PostgreSQL database has no tables in its schema: a new one."""
    return not conn.execute("SELECT 1 FROM information_schema.tables "
                            "WHERE table_schema = current_schema() LIMIT 1").fetchone()


def postgres_applied(conn: Any) -> list[str]:
    """The names of the migrations applied to a PostgreSQL database, in order (read only)."""
    if conn.execute("SELECT to_regclass(%s) AS t", (POSTGRES_APPLIED,)).fetchone()["t"] is None:
        return []
    return [r["name"] for r in conn.execute(
        f"SELECT name FROM {POSTGRES_APPLIED} WHERE migration_set = %s "  # noqa: S608
        "ORDER BY id", (migrations.name,))]


def postgres_apply(conn: Any) -> None:
    """Apply the pending migrations to a PostgreSQL database (inside the caller's
    transaction: DDL is transactional there, so all apply or none)."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS {POSTGRES_APPLIED} (id BIGINT GENERATED BY "
                 "DEFAULT AS IDENTITY PRIMARY KEY, migration_set TEXT NOT NULL, "
                 "name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    done = set(postgres_applied(conn))
    for migration in migrations.pending(Database(memory=True)):
        if migration.name in done:
            continue
        migration.fn(_PostgresDDL(conn))
        conn.execute(f"INSERT INTO {POSTGRES_APPLIED} (migration_set, name, applied_at) "  # noqa: S608
                     "VALUES (%s, %s, %s)",
                     (migrations.name, migration.name, datetime.now(UTC).isoformat()))
