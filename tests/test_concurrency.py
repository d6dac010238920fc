"""Several `mailbot ingest` processes at once, as an MTA delivering in parallel.

Real processes on one data directory that does not exist yet: they create the database,
the schema, the signing key and the spool together, write the same attachment (and the
same mail, delivered to two support addresses) at the same moment, and still file every
mail exactly once, quarantining nothing.  Also: acknowledgements reach the outbox sender
only once the ticket's commit is durable.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from daemon_util import Instance, process_env
from mails import build_mail

from mailbot.context import open_context
from mailbot.inbound import pipeline
from mailbot.outbound.tokens import Signer
from mailbot.settings.config import load
from mailbot.store import blobs

PROCESSES = 8
PER_PROCESS = 100
# The same signature image in every mail: all processes write the same attachment file.
LOGO = ("logo.png", "image/png", hashlib.sha256(b"logo").digest() * 64)
# Mails delivered to two support addresses reach every process: the same bytes at once.
SHARED = 5


def mail(name: str) -> bytes:
    """A customer mail with its own Message-ID, sender and subject, and the shared logo."""
    return build_mail(subject=f"Anfrage {name}", sender=(f"Kunde {name}", f"{name}@kunde.example"),
                      message_id=f"{name}@kunde.example", attachments=(LOGO,))


def start_ingest(instance: Instance, *files: Path, env: dict | None = None
                 ) -> subprocess.Popen[bytes]:
    """`mailbot ingest` as the MTA runs it, without waiting for it."""
    return subprocess.Popen(
        [sys.executable, "-m", "mailbot", "--config", str(instance.config_path), "ingest",
         *map(str, files)],
        stdin=subprocess.PIPE if not files else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or process_env())


def finish(process: subprocess.Popen[bytes], raw: bytes | None = None) -> tuple[int, str]:
    """Wait for an ingest process; its exit code and what it wrote to stderr."""
    _, err = process.communicate(raw, timeout=120)
    return process.returncode, err.decode(errors="replace")


def private(path: Path) -> bool:
    """Whether only the owner can read the file or directory."""
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_parallel_ingest_processes_file_every_mail_exactly_once(tmp_path):
    """8 processes × 100 mails on a new data dir: 800 tickets (+ shared ones once), none held."""
    instance = Instance(tmp_path)
    folder = tmp_path / "mails"
    folder.mkdir()
    shared = []
    for n in range(SHARED):
        shared.append(folder / f"shared{n}.eml")
        shared[-1].write_bytes(mail(f"shared{n}"))
    batches = []
    for p in range(PROCESSES):
        batch = [*shared]
        for i in range(PER_PROCESS):
            batch.append(folder / f"p{p}m{i}.eml")
            batch[-1].write_bytes(mail(f"p{p}m{i}"))
        batches.append(batch)
    assert not instance.db_path.parent.exists()

    processes = [start_ingest(instance, *batch) for batch in batches]
    results = [finish(p) for p in processes]

    assert [code for code, _ in results] == [0] * PROCESSES, results
    assert instance.count("tickets") == PROCESSES * PER_PROCESS + SHARED
    assert instance.count("quarantine") == 0
    filed = instance.query("SELECT message_id, COUNT(*) AS n FROM messages GROUP BY message_id")
    assert len(filed) == PROCESSES * PER_PROCESS + SHARED
    assert {row["n"] for row in filed} == {1}
    assert_stored_files_intact(instance.db_path.parent, PROCESSES * PER_PROCESS + SHARED)


def assert_stored_files_intact(data: Path, mails: int) -> None:
    """One intact file per content under spool/ and files/, private, no temporary leftovers."""
    spooled = [p for p in (data / "spool").rglob("*") if p.is_file()]
    attachments = [p for p in (data / "files").rglob("*") if p.is_file()]
    assert len(spooled) == mails
    assert [p.name for p in attachments] == [hashlib.sha256(LOGO[2]).hexdigest()]
    for path in spooled + attachments:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
        assert private(path) and private(path.parent), path
    for path in (data, data / "spool", data / "files", data / "mailbot.sqlite3"):
        assert private(path), path


def test_many_one_mail_processes_on_a_new_data_dir_all_succeed_with_one_key(tmp_path):
    """One process per mail, all at once, on a data dir that does not exist and no secret.

    All create the schema and the signing key together: every one files its mail, and every
    acknowledgement is signed with the one key kept in the data directory.
    """
    count = 12
    instance = Instance(tmp_path)
    del instance.settings["support"]["signing_secret"]
    instance.write()
    env = process_env()
    env.pop("MAILBOT_SECRET", None)
    mails = [mail(f"einzeln{n}") for n in range(count)]

    processes = [start_ingest(instance, env=env) for _ in mails]
    results = [finish(p, raw) for p, raw in zip(processes, mails, strict=True)]

    assert [code for code, _ in results] == [0] * count, results
    assert instance.count("tickets") == count and instance.count("quarantine") == 0
    key_file = instance.db_path.parent / "signing.key"
    assert private(key_file) and private(key_file.parent)
    signer = Signer(key_file.read_text().strip())
    acks = instance.query("SELECT t.number, o.message_id FROM outbox o "
                          "JOIN tickets t ON t.id = o.ticket_id WHERE o.kind = 'acknowledgement'")
    assert len(acks) == count
    for ack in acks:
        assert signer.read_message_id(ack["message_id"]) == ack["number"], ack
    leftovers = [p.name for p in key_file.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_acknowledgements_reach_the_sender_only_after_the_batch_is_durable(tmp_path):
    """In a batch the outbox bell rings at the flush, not at each commit; a single mail at once."""
    instance = Instance(tmp_path)
    rings: list[int] = []
    ctx = open_context(load(instance.config_path), on_outbox=lambda: rings.append(
        ctx.store.row("SELECT COUNT(*) AS n FROM outbox")["n"]))
    try:
        feed = pipeline.feed(ctx)
        for n in range(3):
            assert feed.file(mail(f"stapel{n}"), "imap:support").status == "created"
        assert rings == []  # committed, queued, but not yet durable: the sender sleeps
        feed.flush()
        assert rings == [3]
        assert pipeline.ingest(ctx, mail("einzeln"), "smtp").status == "created"
        assert rings == [3, 4]  # a durable commit wakes the sender at once
    finally:
        ctx.store.close()


def test_spool_written_by_threads_at_once_is_one_intact_file(tmp_path):
    """Writers of the same bytes at the same moment (one process id) end with one file."""
    writers, rounds = 8, 5
    start = threading.Barrier(writers)
    spool = blobs.FileBlobs(tmp_path / "spool")

    def write(payload: bytes) -> str:
        start.wait(10)
        return spool.put(payload, sync=False)

    with ThreadPoolExecutor(writers) as pool:
        for _ in range(rounds):
            payload = os.urandom(1 << 20)
            [digest] = set(pool.map(write, [payload] * writers))
            assert spool.get(digest) == payload
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == rounds
