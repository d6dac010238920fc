"""A full disk, or a spool or attachment directory that cannot be written, is our fault.

The data directory lives on a small tmpfs of its own, filled up by a filler file: at
every amount of room left, `mailbot ingest` exits 0 or 75 and the listener answers 250
or 451 — never a quarantine, never a bounce — and once the space is freed the same mails
are filed exactly once each.  Needs root (mount); skipped with the reason otherwise.
"""

from __future__ import annotations

import errno
import hashlib
import os
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_util import Instance, base_settings
from mails import build_mail

EX_OK, EX_TEMPFAIL = 0, 75
MOST_ROOM_PAGES = 120  # more than one mail, its attachment and its commit ever need here
STEP_PAGES = 8


def mount_tmpfs(where: Path, options: str) -> None:
    """Mount a tmpfs at ``where``, or fail saying why it cannot be done here."""
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"needs a tmpfs of its own, and mounting one is not permitted here "
                    f"(run as root): {result.stderr.strip()}")


def unmount(where: Path) -> None:
    """Unmount; lazily if a process we started still holds a file there."""
    if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.fixture
def disk(tmp_path) -> Iterator[Path]:
    """A 2 MB file system of this test's own."""
    where = tmp_path / "disk"
    mount_tmpfs(where, "size=2m,mode=0700")
    try:
        yield where
    finally:
        unmount(where)


def fill(disk: Path, leave_pages: int = 0) -> None:
    """Fill ``disk`` up with a filler file, then free ``leave_pages`` pages of it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 16, 512):
            try:
                while True:
                    os.write(fd, bytes(chunk))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    page = os.statvfs(disk).f_frsize
    os.truncate(filler, max(0, filler.stat().st_size - leave_pages * page))


def free(disk: Path) -> None:
    """Give all the room back."""
    (disk / "filler").unlink()


def mail(n: int) -> bytes:
    """A customer mail of its own, with an attachment (it needs a file of its own too)."""
    return build_mail(subject=f"Platte voll {n}", sender=(f"Kunde {n}", f"k{n}@kunde.example"),
                      message_id=f"platte{n}@kunde.example",
                      attachments=((f"protokoll{n}.txt", "text/plain",
                                    hashlib.sha256(bytes([n])).hexdigest().encode() * 40),))


def filed_once(instance: Instance, mails: int) -> None:
    """Each mail became exactly one ticket, and nothing was quarantined."""
    rows = instance.query("SELECT subject, COUNT(*) AS n FROM tickets GROUP BY subject")
    assert {r["subject"]: r["n"] for r in rows} == {f"Platte voll {n}": 1 for n in range(mails)}
    assert instance.count("quarantine") == 0


def test_ingest_on_a_full_disk_exits_75_and_files_each_mail_once_after_space_is_freed(
        tmp_path, disk):
    """With no room up to enough room: exit 75 until the mail fits, then 0; never 65."""
    instance = Instance(tmp_path, base_settings(disk / "data"))
    assert instance.run("ingest", input=mail(0)).returncode == EX_OK
    codes, errors = [], []
    for leave in range(0, MOST_ROOM_PAGES, STEP_PAGES):
        fill(disk, leave)
        result = instance.run("ingest", input=mail(len(codes) + 1))
        codes.append(result.returncode)
        errors.append(result.stderr.decode(errors="replace"))
        if result.returncode != EX_TEMPFAIL:
            break
    assert codes[0] == EX_TEMPFAIL and codes[-1] == EX_OK, list(zip(codes, errors, strict=True))
    assert all("temporary failure" in e for e in errors[:-1]), errors
    free(disk)
    assert instance.count("quarantine") == 0
    assert instance.count("tickets") == 2  # the first mail, and the one that fitted

    files = []
    for n in range(len(codes) + 1):  # the MTA delivers every mail again
        files.append(tmp_path / f"mail{n}.eml")
        files[-1].write_bytes(mail(n))
    result = instance.run("ingest", *map(str, files))
    assert result.returncode == EX_OK, result.stderr.decode()
    filed_once(instance, len(files))


def deliver(host: str, port: int, raw: bytes) -> int:
    """Send one mail over SMTP; the code the listener answered DATA with."""
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.ehlo()
        client.mail("kunde@kunde.example")
        client.rcpt("support@example.com")
        return client.data(raw)[0]


def test_listener_answers_451_on_a_full_disk_and_files_each_mail_once_after(tmp_path, disk):
    """The daemon defers mail while the disk is full (451) and files it once after."""
    instance = Instance(tmp_path, base_settings(disk / "data"))
    codes = []
    with instance.start():
        for leave in range(0, MOST_ROOM_PAGES, STEP_PAGES):
            fill(disk, leave)
            codes.append(deliver(*instance.listener, mail(len(codes))))
            if codes[-1] != 451:
                break
        free(disk)
        assert codes[0] == 451 and set(codes) <= {451, 250}, codes
        assert instance.count("quarantine") == 0
        for n in range(len(codes)):  # the sending MTA retries what was deferred
            assert deliver(*instance.listener, mail(n)) == 250
        instance.wait_tickets(len(codes))
        filed_once(instance, len(codes))


@pytest.mark.parametrize("folder", ["spool", "files"])
def test_unwritable_spool_or_attachment_dir_is_a_temporary_failure(tmp_path, folder):
    """A read-only spool or attachment directory: exit 75, nothing held; writable again: filed."""
    instance = Instance(tmp_path)
    assert instance.run("ingest", input=mail(0)).returncode == EX_OK
    where = instance.db_path.parent / folder
    mount_tmpfs(where, "ro,size=64k")
    try:
        result = instance.run("ingest", input=mail(1))
    finally:
        unmount(where)
    assert result.returncode == EX_TEMPFAIL, result.stderr.decode()
    assert "temporary failure" in result.stderr.decode()
    assert instance.count("tickets") == 1 and instance.count("quarantine") == 0
    assert instance.run("ingest", input=mail(1)).returncode == EX_OK
    filed_once(instance, 2)
