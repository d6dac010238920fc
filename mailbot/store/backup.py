"""Backups of a data directory: written while mailbot runs, verified, restored whole or not.

A backup is a folder: ``mailbot.sqlite3`` (a copy made with SQLite's backup API in one
step, so one consistent moment, in rollback-journal mode so the file stands alone),
``spool/`` and ``files/`` laid out as in the data directory, the extra files asked for
(the signing key), and ``manifest.json``: the schema version, counts of rows, and the size
and SHA-256 of every file.  It is written into ``DEST.partial`` and renamed to ``DEST``
only once verified, so a folder under the backup's name is always a whole one.  A restore
verifies first, copies into a staging folder inside the data directory, and moves the
copies into place only when all are written, the database last.  Files are 0600 in 0700
folders: they hold customers' mail.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from sqlite_utils import Database

from mailbot.store import blobs, schema

FORMAT = "mailbot-backup 1"
MANIFEST = "manifest.json"
DATABASE = "mailbot.sqlite3"
# The content-addressed folders of a data directory and the columns whose rows need their
# files (the spool is copied whole besides: it also holds the raw bytes of every mail seen).
NEEDED = {
    "spool": (("messages", "spool_sha256"), ("quarantine", "sha256"), ("spam_held", "sha256")),
    "files": (("attachments", "sha256"),),
}
COUNTED = ("tickets", "messages", "attachments", "outbox")
PARTIAL = ".partial"
SET_ASIDE = "replaced-"
STAGING = ".restoring-"
CHUNK = 1 << 20
SHOWN_PROBLEMS = 10


class BackupError(Exception):
    """A backup or restore could not be written; nothing was left looking complete."""


class NotEmpty(BackupError):
    """The destination holds something already; the message names it."""


class DamagedBackup(Exception):
    """A backup failed verification; the message names each damaged file and why."""


def write(data_dir: Path, dest: Path, extras: tuple[str, ...] = (), made_by: str = "",
          busy_timeout: float = 5.0) -> dict:
    """Back up ``data_dir`` into ``dest`` (new, or an empty folder), verified; the manifest.

    Safe beside a running daemon: the database is copied at one moment, the files after
    it, and every file a copied row needs was on disk before its row was committed.  A
    needed file that is gone from the data directory (deleted since, or lost) or damaged
    there is listed under ``missing`` in the manifest instead of being copied.  Any other
    failure raises (OSError, sqlite3.Error, :class:`BackupError`) and leaves no ``dest``.
    """
    source = data_dir / DATABASE
    if not source.is_file():
        raise BackupError(f"no database at {source}: nothing to back up")
    partial = dest.with_name(dest.name + PARTIAL)
    _check_free(dest, partial)
    partial.mkdir(mode=0o700, parents=True)
    try:
        manifest = _fill(data_dir, partial, extras, made_by, busy_timeout)
        verify(partial)
        blobs.sync_filesystem(partial)
        if dest.exists():
            dest.rmdir()
        partial.rename(dest)
        blobs.fsync(dest.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _check_free(dest: Path, partial: Path) -> None:
    """Refuse a destination that holds anything, or a backup to it under way."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise NotEmpty(f"{dest} exists and is not an empty folder")
    if partial.exists():
        raise NotEmpty(f"{partial} exists: a backup to {dest} is running or was interrupted "
                       "(remove it once none runs)")


def _fill(data_dir: Path, target: Path, extras: tuple[str, ...], made_by: str,
          busy_timeout: float) -> dict:
    """Copy the database, the needed files, the spool and the extras; write the manifest."""
    database, snapshot = _copy_database(data_dir / DATABASE, target / DATABASE, busy_timeout)
    files: list[dict] = []
    missing: list[dict] = []
    for folder, needed in snapshot["needed"].items():
        present = _present(data_dir / folder) if folder == "spool" else set()
        for sha in sorted(needed | present):
            path = f"{folder}/{sha[:2]}/{sha}"
            entry = _copy_blob(data_dir / path, target / path, path, sha)
            (files if "sha256" in entry else missing).append(entry)
    files += [_copy(data_dir / name, target / name, name)
              for name in extras if (data_dir / name).is_file()]
    manifest = {"format": FORMAT, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "made_by": made_by, "schema": snapshot["version"].found,
                "migrations": snapshot["migrations"], "counts": snapshot["counts"],
                "database": database, "files": files, "missing": missing}
    _write_private(target / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest


def _copy_database(source: Path, target: Path, busy_timeout: float) -> tuple[dict, dict]:
    """The live database copied in one step (one read transaction); its entry and contents."""
    _write_private(target, b"")
    live = sqlite3.connect(source, timeout=busy_timeout)
    try:
        copy = sqlite3.connect(target, isolation_level=None)
        try:
            live.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
            snapshot = _contents(copy)
        finally:
            copy.close()
    finally:
        live.close()
    return _entry(target, DATABASE), snapshot


def _contents(conn: sqlite3.Connection) -> dict:
    """What a copied database holds: schema version, counts, the files its rows need."""
    db = Database(conn)
    tables = set(db.table_names())
    needed = {folder: {sha for table, column in columns if table in tables
                       for (sha,) in conn.execute(
                           f"SELECT DISTINCT {column} FROM {table} "  # noqa: S608 - our names
                           f"WHERE {column} IS NOT NULL AND {column} != ''")}
              for folder, columns in NEEDED.items()}
    counts = {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
              for table in COUNTED if table in tables}
    return {"version": schema.version(db), "needed": needed, "counts": counts,
            "migrations": [m.name for m in schema.migrations.applied(db)]}


def _present(folder: Path) -> set[str]:
    """The hashes of the whole files in a content-addressed folder (no temporary ones)."""
    if not folder.is_dir():
        return set()
    return {path.name for path in folder.glob("??/*")
            if blobs.is_digest(path.name) and path.parent.name == path.name[:2] and path.is_file()}


def _copy_blob(source: Path, target: Path, name: str, sha: str) -> dict:
    """Copy one content-addressed file; its entry, or a ``missing`` entry saying why."""
    try:
        entry = _copy(source, target, name)
    except FileNotFoundError:
        return {"path": name, "reason": "not in the data directory"}
    if entry["sha256"] != sha:
        target.unlink()
        return {"path": name, "reason": "damaged in the data directory (its content does "
                                        "not match its hash)"}
    return entry


def _copy(source: Path, target: Path, name: str) -> dict:
    """Copy one file into a new private file, hashing it on the way; its manifest entry."""
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as reader:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as writer:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
                size += len(chunk)
    return {"path": name, "sha256": digest.hexdigest(), "size": size}


def _entry(path: Path, name: str) -> dict:
    """The manifest entry of a file as it is on disk."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"path": name, "sha256": digest, "size": path.stat().st_size}


def _write_private(path: Path, data: bytes) -> None:
    """A new 0600 file with ``data``."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(data)


# -- verifying ---------------------------------------------------------------------------------

def verify(src: Path) -> dict:
    """Check a backup: its manifest, the database's hash and integrity, every file's hash.

    Returns the manifest; raises :class:`DamagedBackup` naming what is wrong with which
    file.  Reads everything once; writes nothing.
    """
    manifest = _read_manifest(src)
    problems = _check_database(src, manifest)
    for entry in manifest["files"]:
        problems += _check_file(src, entry)
    if problems:
        more = len(problems) - SHOWN_PROBLEMS
        raise DamagedBackup(f"{src} is damaged: " + "; ".join(problems[:SHOWN_PROBLEMS])
                            + (f"; and {more} more" if more > 0 else ""))
    return manifest


def backup_version(manifest: dict) -> schema.SchemaVersion:
    """Where a verified backup's database stands against this code's schema."""
    return schema.compare(manifest["migrations"])


def _read_manifest(src: Path) -> dict:
    """The manifest, checked for its form and for paths that stay inside the backup."""
    try:
        manifest = json.loads((src / MANIFEST).read_bytes())
    except FileNotFoundError as exc:
        raise DamagedBackup(f"{src} is no mailbot backup: it has no {MANIFEST}") from exc
    except (OSError, ValueError) as exc:
        raise DamagedBackup(f"{src / MANIFEST} cannot be read: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DamagedBackup(f"{src / MANIFEST} is not a manifest of the form {FORMAT!r}")
    try:
        entries = [manifest["database"], *manifest["files"]]
        wrong = [e for e in entries if not _good_entry(e)]
        names_ok = all(isinstance(n, str) for n in manifest["migrations"])
    except (KeyError, TypeError) as exc:
        raise DamagedBackup(f"{src / MANIFEST} lacks {exc}") from exc
    if wrong or not names_ok or manifest["database"]["path"] != DATABASE:
        raise DamagedBackup(f"{src / MANIFEST} has entries mailbot does not write: "
                            f"{(wrong or [manifest['database']])[0]!r}")
    return manifest


def _good_entry(entry: object) -> bool:
    """A file entry with a hash and a size whose path is a top-level name or a blob's."""
    if not isinstance(entry, dict) or not isinstance(entry.get("size"), int) \
            or not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("path"), str):
        return False
    parts = PurePosixPath(entry["path"]).parts
    if len(parts) == 1:
        return parts[0] not in ("", ".", "..", MANIFEST) and not parts[0].startswith(".")
    return len(parts) == 3 and parts[0] in NEEDED and parts[2] == entry["sha256"] \
        and blobs.is_digest(parts[2]) and parts[1] == parts[2][:2]


def _check_database(src: Path, manifest: dict) -> list[str]:
    """What is wrong with the backup's database: its size, hash, integrity, schema."""
    problems = _check_file(src, manifest["database"])
    path = src / DATABASE
    if not path.is_file():
        return problems
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            verdict = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            applied = [m.name for m in schema.migrations.applied(Database(conn))]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [*problems, f"{DATABASE}: {exc}"]
    if verdict != ["ok"]:
        problems.append(f"{DATABASE}: integrity check failed: {'; '.join(verdict[:3])}")
    elif applied != manifest["migrations"]:
        problems.append(f"{DATABASE}: its migrations differ from the manifest's")
    return problems


def _check_file(src: Path, entry: dict) -> list[str]:
    """What is wrong with one file of the backup (nothing: an empty list)."""
    name = entry["path"]
    path = src / name
    if not path.is_file():
        return [f"{name}: missing"]
    size = path.stat().st_size
    if size != entry["size"]:
        return [f"{name}: {size} bytes, the manifest says {entry['size']} (truncated or "
                "changed)"]
    if _entry(path, name)["sha256"] != entry["sha256"]:
        return [f"{name}: damaged (its content does not match its SHA-256)"]
    return []


# -- restoring ---------------------------------------------------------------------------------

def occupants(data_dir: Path, keep: frozenset[str]) -> list[str]:
    """What a data directory holds that a restore would replace (not ``keep``, nor the
    contents set aside by an earlier restore)."""
    if not data_dir.is_dir():
        return []
    return sorted(p.name for p in data_dir.iterdir() if p.name not in keep
                  and not p.name.startswith((SET_ASIDE, STAGING)))


def check_target(data_dir: Path, keep: frozenset[str], force: bool) -> list[str]:
    """What a restore would move aside; :class:`NotEmpty` if that is anything, unless
    ``force``."""
    present = occupants(data_dir, keep)
    if present and not force:
        raise NotEmpty(f"{data_dir} is not empty (it holds {', '.join(present[:5])}): "
                       "restore into an empty data directory, or pass --force to move its "
                       "contents aside")
    return present


def restore(src: Path, data_dir: Path, manifest: dict, keep: frozenset[str],
            force: bool = False) -> Path | None:
    """Copy a verified backup into ``data_dir``; the folder its previous contents went to.

    A data directory holding anything but ``keep`` is refused (:class:`NotEmpty`) unless
    ``force``: then its contents are moved aside into ``replaced-<time>-...`` inside it,
    never deleted.  Each file is hashed again as it is copied (:class:`DamagedBackup` if it
    changed since it was verified); on any failure the data directory is left as it was.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    present = check_target(data_dir, keep, force)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-")
    staging = Path(tempfile.mkdtemp(prefix=STAGING + stamp, dir=data_dir))
    try:
        for entry in (manifest["database"], *manifest["files"]):
            copied = _copy(src / entry["path"], staging / entry["path"], entry["path"])
            if copied["sha256"] != entry["sha256"]:
                raise DamagedBackup(f"{entry['path']} changed since it was verified")
        blobs.sync_filesystem(staging)
        aside = _set_aside(data_dir, present, stamp) if present else None
        for name in sorted((p.name for p in staging.iterdir()), key=lambda n: n == DATABASE):
            _place(staging / name, data_dir / name)
        staging.rmdir()
        blobs.fsync(data_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return aside


def _place(staged: Path, target: Path) -> None:
    """Move a staged file or folder into place, never over one that appeared meanwhile.

    A `mailbot ingest` started by the MTA during the restore creates a new database (and
    its write-ahead log): replacing it would lose its mail, and a foreign log beside the
    restored database would damage it.
    """
    try:
        if staged.is_dir():
            staged.rename(target)  # onto nothing, or an empty folder
        else:
            os.link(staged, target)
            staged.unlink()
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        raise BackupError(f"{target} appeared during the restore (was mail delivered through "
                          "`mailbot ingest`?): stop deliveries and restore again with "
                          "--force") from exc


def _set_aside(data_dir: Path, names: list[str], stamp: str) -> Path:
    """Move these entries of the data directory into a new folder inside it; that folder."""
    aside = Path(tempfile.mkdtemp(prefix=SET_ASIDE + stamp, dir=data_dir))
    for name in names:
        (data_dir / name).rename(aside / name)
    blobs.fsync(aside)
    return aside
