"""Raw mails and attachments are kept where the store says: files under the data directory
beside SQLite, rows of the database with PostgreSQL, so that no node of several keeps mail
of its own and any node serves any ticket's files and retries any quarantined mail."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from daemon_util import Instance, run_measured
from mails import build_mail

from mailbot.inbound import pipeline
from mailbot.store.blobs import CHUNK_BYTES
from mailbot.store.postgres import WRITE_LOCK
from mailbot.tickets import actions, retention
from mailbot.web.server import make_app

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
MB = 1024 * 1024
CUSTOMER = ("Jana Kurz", "jana.kurz@kunde.example")
PHOTO = ("foto.jpg", "image/jpeg", b"\xff\xd8\xff\xe0 ein Foto vom Drucker " * 64)
LOG = ("fehler.log", "text/plain", b"Fehler 42 in Zeile 3\n" * 20)


def sha(data: bytes) -> str:
    """The SHA-256 of some bytes: their name where they are kept."""
    return hashlib.sha256(data).hexdigest()


def on_disk(desk) -> set[str]:
    """The names of the files under the desk's data_dir/spool and data_dir/files."""
    data = desk.ctx.config.data_dir
    return {p.name for folder in ("spool", "files") for p in (data / folder).rglob("*")
            if p.is_file()}


def in_database(desk) -> set[tuple[str, str]]:
    """(kind, sha256) of every blob row and every chunk row in the database."""
    return {(r["kind"], r["sha256"]) for r in desk.ctx.store.rows(
        "SELECT kind, sha256 FROM blobs UNION SELECT kind, sha256 FROM blob_chunks")}


def mail_with_file(name: str, payload: bytes, subject: str) -> bytes:
    """A customer mail carrying one base64 file (built by hand: fast for a big one)."""
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (b"From: Jana Kurz <jana.kurz@kunde.example>\r\nTo: support@example.com\r\n"
            b"Subject: " + subject.encode() + b"\r\nDate: Tue, 24 Nov 2026 09:30:00 +0100\r\n"
            b"Message-ID: <" + sha(subject.encode()).encode() + b"@kunde.example>\r\n"
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="teil"\r\n\r\n'
            b"--teil\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nAnbei.\r\n"
            b"--teil\r\nContent-Type: application/octet-stream\r\n"
            b'Content-Disposition: attachment; filename="' + name.encode() + b'"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--teil--\r\n")


async def download_all(desk, number: str) -> dict[str, tuple[int, bytes]]:
    """Every attachment on the public page of ticket ``number``, served by ``desk``'s web
    server over HTTP: status and body by file name."""
    path = urlsplit(desk.ctx.link("ticket", number)).path
    async with TestClient(TestServer(make_app(desk.ctx))) as http:
        page = await http.get(path)
        assert page.status == 200, await page.text()
        links = re.findall(r'<a href="([^"]+/a/\d+)" download>([^<]+)</a>', await page.text())
        found = {}
        for href, name in links:
            response = await http.get(f"{path.rsplit('/', 1)[0]}/{href}")
            found[name] = (response.status, await response.read())
        return found


@pytest.mark.both_stores
def test_a_filed_mail_is_kept_where_the_store_says(make_desk, store_engine):
    """SQLite: the raw mail and its attachment are files under the data directory, the
    database's blob tables stay empty; PostgreSQL: nothing under data_dir/spool or
    data_dir/files, both are in the database."""
    desk = make_desk(NOW)
    raw = build_mail(sender=CUSTOMER, attachments=(PHOTO,))
    assert desk.receive(raw).status == "created"
    assert desk.ctx.spool.get(sha(raw)) == raw
    assert desk.ctx.files.get(sha(PHOTO[2])) == PHOTO[2]
    if store_engine == "postgresql":
        assert on_disk(desk) == set()
        assert in_database(desk) == {("spool", sha(raw)), ("files", sha(PHOTO[2]))}
    else:
        assert on_disk(desk) == {sha(raw), sha(PHOTO[2])}
        assert in_database(desk) == set()


@pytest.mark.both_stores
async def test_a_big_attachment_is_downloaded_byte_for_byte(make_desk, store_engine):
    """A 20 MB file comes back from the ticket page exactly as sent; in PostgreSQL it is
    kept in chunks of a megabyte."""
    desk = make_desk(NOW, limits={"max_message_bytes": 40 * MB,
                                  "max_attachment_bytes": 30 * MB})
    payload = os.urandom(20 * MB + 321)
    outcome = desk.receive(mail_with_file("messwerte.bin", payload, "Messwerte"))
    assert outcome.status == "created", outcome
    assert await download_all(desk, outcome.ticket_number) == {"messwerte.bin": (200, payload)}
    if store_engine == "postgresql":
        sizes = [r["n"] for r in desk.ctx.store.rows(
            "SELECT octet_length(data) AS n FROM blob_chunks WHERE sha256 = ? ORDER BY seq",
            (sha(payload),))]
        assert sizes == [CHUNK_BYTES] * 20 + [321]


async def test_another_node_serves_the_files_and_retries_the_quarantine(make_desk, pg):
    """Two nodes on one PostgreSQL database, each with a data directory of its own: the
    second serves the attachment of a mail the first filed, and files a mail the first
    quarantined (its raw bytes come from the database); neither keeps a file."""
    url = pg.new_database()
    first = make_desk(NOW, store={"url": url}, limits={"max_attachments": 1})
    second = make_desk(NOW, store={"url": url})
    filed = first.receive(build_mail(sender=CUSTOMER, subject="Foto", attachments=(PHOTO,)))
    held = build_mail(sender=CUSTOMER, subject="Zwei Dateien", attachments=(PHOTO, LOG))
    assert first.receive(held).status == "quarantined"

    assert await download_all(second, filed.ticket_number) == {"foto.jpg": (200, PHOTO[2])}
    [(_, retried)] = pipeline.retry_quarantined(second.ctx)
    assert retried.status == "created"
    assert await download_all(first, retried.ticket_number) == {
        "foto.jpg": (200, PHOTO[2]), "fehler.log": (200, LOG[2])}
    assert on_disk(first) == on_disk(second) == set()


def test_a_put_that_died_half_way_is_finished_by_the_next(make_desk, pg):
    """Chunks left without their blob row (a node died while writing, one chunk cut short)
    are not a file yet; the same attachment filed again completes it, byte for byte."""
    desk = make_desk(NOW, store={"url": pg.new_database()})
    payload = os.urandom(3 * MB + 7)
    digest = sha(payload)
    for seq, data in ((0, payload[:MB]), (1, payload[MB:MB + 1000])):
        desk.ctx.store.execute("INSERT INTO blob_chunks(kind, sha256, seq, data) "
                               "VALUES ('files', ?, ?, ?)", (digest, seq, data))
    assert desk.ctx.files.present({digest}) == set()
    with pytest.raises(FileNotFoundError):
        desk.ctx.files.get(digest)

    outcome = desk.receive(mail_with_file("scan.pdf", payload, "Scan"))
    assert outcome.status == "created"
    assert desk.ctx.files.get(digest) == payload
    assert [len(c) for c in desk.ctx.files.chunks(digest)] == [MB, MB, MB, 7]


def test_nodes_write_blobs_while_another_holds_the_write_lock(make_desk, pg):
    """A node's long transaction (the cluster-wide write lock) does not hold up another
    node's spooling: raw mails and attachments are written beside it."""
    url = pg.new_database()
    desk = make_desk(NOW, store={"url": url}, service={"busy_timeout_seconds": 1})
    with psycopg.connect(desk.ctx.store.url) as other:  # a transaction: holds the lock
        other.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        assert desk.ctx.spool.put(b"raw mail bytes\r\n") == sha(b"raw mail bytes\r\n")
        assert desk.ctx.files.put(iter([b"a" * MB, b"b" * 10]), sha(b"a" * MB + b"b" * 10))
    assert desk.ctx.files.get(sha(b"a" * MB + b"b" * 10)) == b"a" * MB + b"b" * 10


@pytest.mark.both_stores
def test_erase_and_retention_leave_no_bytes_behind(make_desk):
    """Erasing a person and retention of an old closed ticket remove raw mails and
    attachments from wherever they were kept (files, or blob and chunk rows)."""
    desk = make_desk(NOW, retention={"raw_days": 30})
    erased = build_mail(sender=("Anna Meier", "anna@other.example"), attachments=(LOG,))
    desk.receive(erased)
    old = build_mail(sender=CUSTOMER, subject="Alt", attachments=(PHOTO,))
    actions.set_status(desk.ctx, desk.receive(old).ticket_number, "closed")
    assert on_disk(desk) | {s for _, s in in_database(desk)} == {
        sha(erased), sha(LOG[2]), sha(old), sha(PHOTO[2])}

    assert desk.instance.cli("contacts", "erase", "anna@other.example", "--yes").exit_code == 0
    assert on_disk(desk) | {s for _, s in in_database(desk)} == {sha(old), sha(PHOTO[2])}
    desk.now = NOW + timedelta(days=31)
    assert retention.run(desk.ctx, desk.now)["attachment_files"] == 1
    assert on_disk(desk) == set() and in_database(desk) == set()


def test_ingest_into_postgresql_keeps_a_big_file_out_of_memory(tmp_path, pg):
    """`mailbot ingest` of a mail with a 20 MB file into PostgreSQL stays under 130 MB (about
    105 MB: SQLite's 88 and the database client; written whole, it took 165 MB), and the
    file is kept byte for byte, nothing of it under the data directory."""
    bot = Instance(tmp_path)
    bot.settings["store"] = {"url": pg.new_database()}
    bot.settings["limits"] = {"max_message_bytes": 40 * MB, "max_attachment_bytes": 30 * MB}
    bot.write()
    payload = os.urandom(20 * MB)
    (tmp_path / "big.eml").write_bytes(mail_with_file("messwerte.bin", payload, "Messwerte"))
    result, peak = run_measured(bot.config_path, "ingest", str(tmp_path / "big.eml"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert peak < 130, f"peak {peak:.0f} MB"
    with psycopg.connect(bot.settings["store"]["url"]) as conn:
        chunks = conn.execute("SELECT data FROM blob_chunks WHERE kind = 'files' "
                              "ORDER BY seq").fetchall()
    assert b"".join(c[0] for c in chunks) == payload
    assert not (tmp_path / "data" / "files").exists()
