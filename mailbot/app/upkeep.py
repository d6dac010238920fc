"""Keeping a data directory: `mailbot migrate` (and `migrate --to`, the move into
PostgreSQL), `backup` and `restore`, and the daemon's lock.

`mailbot run` holds an flock on ``<data_dir>/mailbot.lock`` for as long as it lives; the
kernel drops it when the process ends, however it ends (a PID file could outlive its
process and lie).  `migrate` (with ``--to`` too) and `restore` take the same lock: neither
runs under a daemon, and no daemon starts in the middle of them.  The file's text names its
holder, for the message only.  Each command returns what to print and its exit status, or raises
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
from typing import TYPE_CHECKING, TypeVar

from mailbot.settings.config import Config
from mailbot.store import SchemaMismatch, Store, TemporaryStoreError, backup, schema

if TYPE_CHECKING:
    from mailbot.store.transfer import Moved

LOCK_FILE = "mailbot.lock"
KEY_FILE = "signing.key"  # where settings.config.signing_secret keeps a generated key
EX_PENDING = 1  # `migrate --check`: migrations are pending; `backup`, `migrate --to`: written,
#                files missing
EX_USAGE = 64  # `migrate --to`: not a PostgreSQL URL, or the password given twice
EX_DATAERR = 65  # the backup to restore is damaged; a blob to move is damaged, or the move
#                  did not verify
EX_NOINPUT = 66  # `migrate --to`: there is no SQLite database to move
EX_UNAVAILABLE = 69  # `migrate --to`: the target database cannot be connected to
EX_CANTCREAT = 73  # the backup's, restore's or move's destination is not empty
EX_IOERR = 74  # writing the backup or the restore failed; the database is unreadable
EX_TEMPFAIL = 75  # a daemon (or another migrate/restore) holds the data directory
EX_CONFIG = 78  # the database or backup is of a newer mailbot; the move's source or target
#                 is at another schema; the store is PostgreSQL already

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


def migrate_to(config: Config, url: str, password_file: Path | None = None) -> tuple[str, int]:
    """Move this SQLite installation (database, raw mails, attachments) into the PostgreSQL
    database at ``url``, verified (:mod:`mailbot.store.transfer`); what it moved and what
    the operator does next.  The password is in ``url``, in ``password_file`` or where
    libpq looks (PGPASSWORD, ~/.pgpass); it is never printed.

    Exit 0 when moved; 1 when moved but rows refer to raw mails or attachments that were not
    in the data directory (listed).  Refused while a daemon runs (75), for a database at an
    older schema (78: `mailbot migrate` first), a target that holds rows (73) or is at
    another schema (78), a target that cannot be reached (69); a blob whose bytes do not
    match its name or a copy that does not verify is 65.  Whenever it fails the target is
    left as it was; the SQLite installation is never changed.
    """
    from mailbot.store import transfer  # psycopg only for this command

    target = _target_url(url, password_file)
    database = config.database
    if not isinstance(database, Path):
        raise UpkeepError("this instance keeps its database in PostgreSQL already "
                          "([store] url): there is no SQLite installation to move", EX_CONFIG)
    if not database.is_file():
        raise UpkeepError(f"no database at {database}: nothing to move", EX_NOINPUT)
    with DataDirLock(config.data_dir).held("mailbot migrate --to"):
        moved = _moved(lambda: transfer.move(database, config.data_dir, target,
                                             config.service.busy_timeout_seconds))
    text = _move_report(config, moved, transfer.shown(target), _password_line(url, password_file))
    return text, EX_PENDING if moved.missing else 0


def _password_line(url: str, password_file: Path | None) -> str:
    """What to write for ``[store] password``: the file it came from, a hint where the URL
    carried it, nothing where libpq found it by itself."""
    from mailbot.store import dialect

    if password_file is not None:
        return f'{{ file = "{password_file}" }}'
    if dialect.has_password(url):
        return '{ file = "/path" }  # or { env = "NAME" }: the password in the URL'
    return ""


def _target_url(url: str, password_file: Path | None) -> str:
    """The target's URL with the password of ``password_file`` written in; a URL that is not
    PostgreSQL's, or a password given twice, is refused (64)."""
    from mailbot.settings.schema import ConfigError, resolve_secret
    from mailbot.store import dialect

    if not dialect.is_postgres(url):
        raise UpkeepError("--to takes a PostgreSQL URL: postgresql://user@host:5432/db", EX_USAGE)
    try:
        dialect.check_postgres(url)
    except dialect.BadStoreURL as exc:
        raise UpkeepError(f"--to: {exc}", EX_USAGE) from exc
    if password_file is None:
        return url
    if dialect.has_password(url):
        raise UpkeepError("the URL carries a password and --password-file gives one: keep one "
                          "of them", EX_USAGE)
    try:
        password = resolve_secret({"file": str(password_file)}, "--password-file")
    except ConfigError as exc:
        raise UpkeepError(str(exc), EX_NOINPUT) from exc
    return dialect.with_password(url, password)


def _moved(move: Callable[[], T]) -> T:
    """Run the move; its refusals and failures as :class:`UpkeepError` with their status."""
    from mailbot.store import transfer

    unchanged = "nothing was written to the target, the SQLite installation is unchanged"
    try:
        return move()
    except SchemaMismatch as exc:  # the SQLite database's
        then = " first, then move it" if exc.version.pending else ""
        raise UpkeepError(f"move refused: {exc}{then}", EX_CONFIG) from exc
    except transfer.TargetNotEmpty as exc:
        raise UpkeepError(f"move refused: {exc}", EX_CANTCREAT) from exc
    except transfer.TargetSchema as exc:
        raise UpkeepError(f"move refused: {exc}", EX_CONFIG) from exc
    except transfer.Unreachable as exc:
        raise UpkeepError(f"move refused: {exc}", EX_UNAVAILABLE) from exc
    except transfer.TransferError as exc:
        raise UpkeepError(f"move failed, {unchanged}: {exc}", EX_DATAERR) from exc
    except TemporaryStoreError as exc:
        raise UpkeepError(f"temporary failure, {unchanged}; run it again later: {exc}",
                          EX_TEMPFAIL) from exc
    except (OSError, sqlite3.Error) as exc:
        raise UpkeepError(f"move failed, {unchanged}: {exc}", EX_IOERR) from exc


def _move_report(config: Config, moved: Moved, url: str, password: str) -> str:
    """What was moved and verified, and the operator's next steps (no password in them:
    ``password`` is the line for it, or "" when libpq found it elsewhere)."""
    rows = ", ".join(f"{table} {n}" for table, n in moved.rows.items() if n)
    kinds = {"spool": "raw mails", "files": "attachment files"}
    held = ", ".join(f"{moved.blobs.get(kind, 0)} {name} ({_amount(moved.size.get(kind, 0))})"
                     for kind, name in kinds.items())
    lines = [f"moved {config.database} and the raw mails and attachments of {config.data_dir} "
             f"into {url} in {moved.seconds:.1f} s, verified:",
             f"  {len(moved.rows)} tables, {sum(moved.rows.values())} rows ({rows or 'none'})",
             f"  {held}, each read back from the target and checked against its SHA-256"]
    if moved.missing:
        lines += [f"warning: {len(moved.missing)} file(s) the database refers to were not in "
                  "the data directory, so they are not in the target either:",
                  *(f"  {line}" for line in moved.missing)]
    lines += ["next steps:", "  1. set in mailbot.toml (of each node):", "       [store]",
              f'       url = "{url}"', *([f"       password = {password}"] if password else []),
              "  2. start mailbot. Mail filed into the SQLite installation from now on is not "
              "in PostgreSQL: switch before deliveries resume.",
              f"  3. the SQLite database and the folders spool/ and files/ of {config.data_dir} "
              "are left as they were: delete them once you have checked the tickets."]
    key = config.data_dir / KEY_FILE
    if not config.support.signing_secret and key.is_file():
        lines.append(f"  Links and reply addresses are signed with the key in {key}: every "
                     f'node needs it, e.g. [support] signing_secret = {{ file = "{key}" }} '
                     "with a copy of that file.")
    return "\n".join(lines)


def _amount(size: int) -> str:
    """A number of bytes as people read it (kB, MB, GB: powers of 1000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


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
