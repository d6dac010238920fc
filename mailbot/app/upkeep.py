"""Keeping a data directory: `mailbot migrate`, `backup` and `restore`, and the daemon's lock.

`mailbot run` holds an flock on ``<data_dir>/mailbot.lock`` for as long as it lives; the
kernel drops it when the process ends, however it ends (a PID file could outlive its
process and lie).  `migrate` and `restore` take the same lock: neither runs under a daemon,
and no daemon starts in the middle of them.  The file's text names its holder, for the
message only.  Each command returns what to print and its exit status, or raises
:class:`UpkeepError` with both.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import TypeVar

from mailbot.settings.config import Config
from mailbot.store import SchemaMismatch, Store, TemporaryStoreError, backup, schema

LOCK_FILE = "mailbot.lock"
KEY_FILE = "signing.key"  # where settings.config.signing_secret keeps a generated key
EX_PENDING = 1  # `migrate --check`: migrations are pending; `backup`: written, files missing
EX_DATAERR = 65  # the backup to restore is damaged
EX_CANTCREAT = 73  # the backup's or restore's destination is not empty
EX_IOERR = 74  # writing the backup or the restore failed; the database is unreadable
EX_TEMPFAIL = 75  # a daemon (or another migrate/restore) holds the data directory
EX_CONFIG = 78  # the database or backup is of a newer mailbot

T = TypeVar("T")


class InUse(Exception):
    """Another mailbot process holds the data directory; the message names it."""


class UpkeepError(Exception):
    """A command refused or failed: what to print and the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class DataDirLock:
    """The flock that a daemon, `migrate` or `restore` holds on a data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.fd: int | None = None

    def acquire(self, holder: str) -> None:
        """Take the lock now, or raise :class:`InUse` naming who holds it."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = os.read(fd, 200).decode(errors="replace").strip() or "another mailbot"
            os.close(fd)
            raise InUse(f"the data directory {self.data_dir} is in use by {who}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{holder} (pid {os.getpid()})\n".encode())
        self.fd = fd

    def release(self) -> None:
        """Let go of the lock (the file stays: removing it would race with the next taker)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    @contextlib.contextmanager
    def held(self, holder: str) -> Iterator[None]:
        """The lock for the length of a block; :class:`UpkeepError` (75) if a daemon has it."""
        try:
            self.acquire(holder)
        except InUse as exc:
            raise UpkeepError(f"{exc}: stop it first (systemctl stop mailbot)",
                              EX_TEMPFAIL) from exc
        try:
            yield
        finally:
            self.release()


def migrate(config: Config, check: bool) -> tuple[str, int]:
    """Bring the database to this code's schema, or with ``check`` only say whether it is.

    ``check`` exits 0 when current, 1 when migrations are pending (it is safe beside a
    daemon: it only reads); migrating refuses while a daemon runs on the data directory.
    """
    path = config.database
    if isinstance(path, Path) and not path.is_file():
        return (f"no database at {path} yet: the first start creates it at schema "
                f"{len(schema.known())}", 0)
    if check:
        found = _opened(config, Store.schema_version)
        if found.unknown:
            raise UpkeepError(found.refusal(), EX_CONFIG)
        if found.pending:
            return f"{found.refusal()} ({', '.join(found.pending)})", EX_PENDING
        return f"the database is at schema {found.found}, as this mailbot needs", 0
    with DataDirLock(config.data_dir).held("mailbot migrate"):
        before, after = _opened(config, Store.migrate)
    if not before.pending:
        return f"the database is at schema {after.found} already: nothing to migrate", 0
    return (f"migrated the database from schema {before.found} to {after.found} "
            f"({', '.join(before.pending)})", 0)


def _opened(config: Config, use: Callable[[Store], T]) -> T:
    """Run ``use(store)`` on the database as it is, whatever its schema; map its refusals."""
    try:
        store = Store(config.database, config.service.busy_timeout_seconds, any_schema=True)
        try:
            return use(store)
        finally:
            store.close()
    except SchemaMismatch as exc:
        raise UpkeepError(str(exc), EX_CONFIG) from exc
    except TemporaryStoreError as exc:
        raise UpkeepError(f"temporary failure, run it again later: {exc}", EX_TEMPFAIL) from exc
    except sqlite3.Error as exc:  # not a database, or a migration failed (rolled back)
        raise UpkeepError(f"{config.database}: {exc}", EX_IOERR) from exc


def _own_database(config: Config, command: str) -> None:
    """Backup and restore copy the data directory with its SQLite file; a database kept
    elsewhere ([store] url: PostgreSQL or another SQLite path) is refused with what to do."""
    if config.database != config.data_dir / backup.DATABASE:
        raise UpkeepError(f"{command} copies the data directory and its SQLite database; this "
                          "instance keeps its database elsewhere ([store] url): back that up "
                          "with its own tools (PostgreSQL: pg_dump) and the data directory "
                          "with the files it holds", EX_CONFIG)


def make_backup(config: Config, dest: Path) -> tuple[str, int]:
    """Back up the data directory into ``dest`` beside a running daemon, verified.

    Exit 0 when whole; 1 when written but lacking files the database needs (they were not
    in the data directory); 73 when ``dest`` is taken, 74 when it could not be written.
    """
    _own_database(config, "mailbot backup")
    made_by = f"mailbot {_version()}"
    try:
        manifest = backup.write(config.data_dir, dest, (KEY_FILE,), made_by,
                                config.service.busy_timeout_seconds)
    except backup.NotEmpty as exc:
        raise UpkeepError(f"backup refused: {exc}", EX_CANTCREAT) from exc
    except (backup.BackupError, backup.DamagedBackup, OSError, sqlite3.Error) as exc:
        raise UpkeepError(f"backup failed, nothing written to {dest}: {exc}", EX_IOERR) from exc
    text = f"backup of {config.data_dir} written to {dest} and verified: {_summary(manifest)}"
    missing = manifest["missing"]
    if not missing:
        return text, 0
    lines = [f"  {m['path']}: {m['reason']}" for m in missing]
    return "\n".join([text, f"warning: {len(missing)} file(s) the database needs are not "
                            "in the backup:", *lines]), EX_PENDING


def restore(config: Config, src: Path, force: bool) -> tuple[str, int]:
    """Restore a backup into the configured data directory, after verifying all of it.

    Refused while a daemon runs there (75), into a data directory that is not empty
    without ``force`` (73; with it the old contents are moved aside, never deleted), for a
    damaged backup (65) or one of a newer mailbot (78).
    """
    _own_database(config, "mailbot restore")
    data_dir, keep = config.data_dir, frozenset({LOCK_FILE})
    with DataDirLock(data_dir).held("mailbot restore"):
        try:
            backup.check_target(data_dir, keep, force)
            manifest = backup.verify(src)
            found = backup.backup_version(manifest)
            if found.unknown:
                raise UpkeepError(f"restore refused: {found.refusal('the backup')}", EX_CONFIG)
            aside = backup.restore(src, data_dir, manifest, keep, force)
        except backup.NotEmpty as exc:
            raise UpkeepError(f"restore refused: {exc}", EX_CANTCREAT) from exc
        except backup.DamagedBackup as exc:
            raise UpkeepError(f"restore refused: {exc}", EX_DATAERR) from exc
        except (backup.BackupError, OSError) as exc:
            raise UpkeepError(f"restore failed: {exc}", EX_IOERR) from exc
    lines = [f"restored {src} (made {manifest['created_at']} by {manifest['made_by']}) "
             f"into {data_dir}: {_summary(manifest)}"]
    if aside is not None:
        lines.append(f"the previous contents are in {aside}: delete them once the restore "
                     "is confirmed")
    if manifest["missing"]:
        lines.append(f"warning: {len(manifest['missing'])} file(s) the database needs were "
                     "missing when the backup was made")
    if found.pending:
        lines.append(f"{found.refusal('the restored database')} before starting mailbot")
    return "\n".join(lines), 0


def _summary(manifest: dict) -> str:
    """One line on what a backup holds: schema, rows, files, size."""
    counts = manifest["counts"]
    files = manifest["files"]
    spool = sum(e["path"].startswith("spool/") for e in files)
    attached = sum(e["path"].startswith("files/") for e in files)
    size = manifest["database"]["size"] + sum(e["size"] for e in files)
    key = ", the signing key" if any(e["path"] == KEY_FILE for e in files) else ""
    return (f"schema {manifest['schema']}; {counts.get('tickets', 0)} tickets, "
            f"{counts.get('messages', 0)} messages, {counts.get('attachments', 0)} "
            f"attachments, {counts.get('outbox', 0)} outbox rows; {spool} spool files, "
            f"{attached} attachment files{key}; {size / 1e6:.1f} MB")


def _version() -> str:
    """This mailbot's version, for the manifest."""
    try:
        return metadata.version("mailbot")
    except metadata.PackageNotFoundError:
        return "(not installed)"
