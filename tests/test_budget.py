"""The per-mail budget (issue 20): a mail is read in a process of its own ("mailbot-reader"),
which is ended when reading takes longer than ``[limits] max_seconds_per_mail``; the mail is
quarantined with that reason and the source goes on.  Readers never outlive mailbot.  And the
part-count limit ``[limits] max_parts``.

The slow mail is a real shape, not a hook: a Content-Type with 120,000 parameters (1.3 MB in
lines of 6 KB), which the standard library reads in time that grows with the square of
their number (half a minute here), under limits raised so high that only the budget stops
it.  Every process a test starts carries a marker in its environment, inherited by the fork
server and the readers, so a test finds exactly the processes of its own mailbot in /proc.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import smtplib
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from daemon_util import Instance, process_env
from hygiene_kit import make_ctx
from mails import build_mail, slow_mail
from servers import wait_until

from mailbot.inbound import pipeline
from mailbot.settings import config
from mailbot.settings.schema import ConfigError
from mailbot.store import inbound as iq

MARK = "MAILBOT_TEST_MARK"
OVER_BUDGET = "reading this mail took longer than 1 s (limits.max_seconds_per_mail)"
TWICE = ("the process reading this mail ended twice while reading it (killed by SIGKILL): "
         "the mail may be built to crash mail readers")
# Limits so high that only the budget stops the slow mail.
RAISED = {"max_parameters": 10_000_000, "max_header_bytes": 100_000_000}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NOW = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # a Tuesday, in business hours


def ordinary(number: int) -> bytes:
    """An ordinary customer mail."""
    return build_mail(subject=f"Drucker {number}", message_id=f"ordinary.{number}@kunde.example")


def marked(marker: str) -> dict[int, str]:
    """The processes whose environment carries ``marker``: pid -> name (comm)."""
    found = {}
    needle = f"{MARK}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = (entry / "comm").read_text().strip()
        except OSError:  # ended meanwhile
            continue
    return found


def readers(marker: str) -> set[int]:
    """The reader processes of the marked mailbot."""
    return {pid for pid, name in marked(marker).items() if name == "mailbot-reader"}


def busy_reader(marker: str) -> int | None:
    """A reader of the marked mailbot that has used a tenth of a second of CPU: reading (an
    ordinary mail takes a millisecond)."""
    for pid in readers(marker):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if (int(fields[11]) + int(fields[12])) / CLOCK_TICKS >= 0.1:
            return pid
    return None


def deliver(instance: Instance, raw: bytes) -> tuple[int, bytes]:
    """Send one mail to the instance's listener: the DATA answer."""
    with smtplib.SMTP(*instance.listener, timeout=60) as client:
        client.ehlo()
        client.mail("kunde@kunde.example")
        client.rcpt("support@example.com")
        return client.data(raw)


def attempt(instance: Instance, raw: bytes) -> None:
    """Send one mail to a listener that may go away meanwhile."""
    with contextlib.suppress(smtplib.SMTPException, OSError):
        deliver(instance, raw)


def budget_instance(root: Path, seconds: float) -> Instance:
    """An instance with the listener, the budget ``seconds`` and the raised limits."""
    instance = Instance(root)
    instance.update("limits", max_seconds_per_mail=seconds, **RAISED)
    return instance


def ingest(instance: Instance, marker: str, *args: str) -> subprocess.Popen[bytes]:
    """`mailbot ingest ARGS` as a real process (an MTA's pipe), carrying ``marker``."""
    return subprocess.Popen(
        [sys.executable, "-m", "mailbot", "--config", str(instance.config_path), "ingest",
         "--verbose", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=process_env({MARK: marker}))


def quarantined(instance: Instance) -> list[str]:
    """The reasons in the quarantine list."""
    return [entry["error"] for entry in instance.cli_json("quarantine", "list")]


def kept(instance: Instance, raw: bytes) -> bool:
    """Whether the raw mail is in the spool, as it came (a quarantined mail can be retried)."""
    digest = hashlib.sha256(raw).hexdigest()
    path = instance.db_path.parent / "spool" / digest[:2] / digest
    return path.is_file() and path.read_bytes() == raw


def test_a_mail_over_the_budget_is_quarantined_and_the_daemon_goes_on(tmp_path: Path) -> None:
    """The slow mail is refused with the budget's sentence, its reader is replaced, the next
    mail is filed, and no process of mailbot is left after SIGTERM."""
    instance, marker = budget_instance(tmp_path, 1), uuid.uuid4().hex
    daemon = instance.start(env={MARK: marker})
    try:
        assert deliver(instance, ordinary(1))[0] == 250
        first = readers(marker)
        assert len(first) == 1
        code, answer = deliver(instance, slow_mail())
        assert (code, b"quarantined" in answer) == (250, True)
        assert quarantined(instance) == [OVER_BUDGET]
        assert kept(instance, slow_mail())
        assert deliver(instance, ordinary(2))[0] == 250
        assert {t["subject"] for t in instance.wait_tickets(2)} == {"Drucker 1", "Drucker 2"}
        now = readers(marker)
        assert now and not now & first
    finally:
        daemon.stop()
    wait_until(lambda: not marked(marker), 10, message="mailbot's processes to end")


def test_a_reader_dies_with_the_daemon_even_in_the_middle_of_a_mail(tmp_path: Path) -> None:
    """SIGKILL to the daemon while a reader works on a mail: the reader ends too."""
    instance, marker = budget_instance(tmp_path, 600), uuid.uuid4().hex
    daemon = instance.start(env={MARK: marker})
    sending = threading.Thread(target=attempt, args=(instance, slow_mail()), daemon=True)
    try:
        sending.start()
        wait_until(lambda: busy_reader(marker), 60, message="a reader at work")
    finally:
        daemon.kill()
    wait_until(lambda: not marked(marker), 10, message="mailbot's processes to end")
    sending.join(10)


def test_ingest_quarantines_a_mail_over_the_budget_and_leaves_no_reader(tmp_path) -> None:
    """`mailbot ingest` reads in a fork of itself, within the budget, and goes on with the
    next file; its reader ends with it."""
    instance, marker = budget_instance(tmp_path, 1), uuid.uuid4().hex
    (tmp_path / "slow.eml").write_bytes(slow_mail())
    (tmp_path / "next.eml").write_bytes(ordinary(1))
    process = ingest(instance, marker, str(tmp_path / "slow.eml"), str(tmp_path / "next.eml"))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert [line.split()[1] for line in out.splitlines()] == [b"quarantined", b"created"]
    assert quarantined(instance) == [OVER_BUDGET]
    assert kept(instance, slow_mail())
    wait_until(lambda: not marked(marker), 10, message="the reader to end")


def test_a_reader_dies_with_ingest_even_in_the_middle_of_a_mail(tmp_path: Path) -> None:
    """SIGKILL to `mailbot ingest` (an MTA's timeout) while its reader works: both end."""
    instance, marker = budget_instance(tmp_path, 600), uuid.uuid4().hex
    (tmp_path / "slow.eml").write_bytes(slow_mail())
    process = ingest(instance, marker, str(tmp_path / "slow.eml"))
    try:
        wait_until(lambda: busy_reader(marker), 60, message="a reader at work")
    finally:
        process.kill()
        process.communicate()
    wait_until(lambda: not marked(marker), 10, message="the reader to end")


def kill_busy_reader(marker: str, spared: set[int]) -> int:
    """SIGKILL a reader at work that is not in ``spared`` (as the OOM killer would)."""
    def fresh() -> int | None:
        found = busy_reader(marker)
        return found if found not in spared else None

    pid = wait_until(fresh, 60, message="a fresh reader at work")
    os.kill(pid, signal.SIGKILL)
    return pid


def test_a_reader_killed_once_reads_the_mail_again_twice_quarantines(tmp_path) -> None:
    """A reader killed from outside while reading may have been our fault (the OOM killer):
    the mail is read again in a fresh reader and filed.  Killed twice, it is the mail's:
    quarantined with a sentence naming the signal."""
    instance, marker = budget_instance(tmp_path, 600), uuid.uuid4().hex
    (tmp_path / "once.eml").write_bytes(slow_mail(20_000, 1))  # read in a second or two
    process = ingest(instance, marker, str(tmp_path / "once.eml"))
    kill_busy_reader(marker, set())
    out, err = process.communicate(timeout=120)
    assert out.split()[1:2] == [b"created"], err
    assert b"reading it again in a fresh one" in err

    (tmp_path / "twice.eml").write_bytes(slow_mail(number=2))
    process = ingest(instance, marker, str(tmp_path / "twice.eml"))
    killed = kill_busy_reader(marker, set())
    kill_busy_reader(marker, {killed})
    out, err = process.communicate(timeout=60)
    assert (process.returncode, out.split()[1:2]) == (0, [b"quarantined"]), err
    assert quarantined(instance) == [TWICE]
    assert kept(instance, slow_mail(number=2))  # written before its readers were killed


@pytest.mark.parametrize(("texts", "status"), [(999, "created"), (1000, "quarantined"),
                                               (300_000, "quarantined")])
def test_more_parts_than_max_parts_are_refused_early(tmp_path, texts: int, status: str) -> None:
    """1,000 parts (the mail itself and 999 texts) are read; one more is refused with the
    limit's name, and so is a mail of 300,000 parts, before they cost time."""
    ctx = make_ctx(tmp_path)
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx%d\r\n" % i for i in range(texts))
    raw = (b"From: kunde@kunde.example\r\nTo: support@example.com\r\nSubject: Teile\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n")
    outcome = pipeline.ingest(ctx, raw, "test")
    assert outcome.status == status
    if status == "quarantined":
        [entry] = iq.quarantined(ctx.store)
        assert entry["error"] == "the mail has more than 1,000 MIME parts (limits.max_parts)"


@pytest.mark.parametrize(("section", "key", "value"), [
    ("limits", "max_seconds_per_mail", -1), ("limits", "max_seconds_per_mail", 100_000),
    ("service", "reading_processes", -1)])
def test_a_budget_or_pool_out_of_range_is_a_config_error(tmp_path, section, key, value) -> None:
    """The error names the file, the key and the reason."""
    path = tmp_path / "mailbot.toml"
    path.write_text(f"[{section}]\n{key} = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        config.load(path)
    assert str(path) in str(error.value) and f"{key} {value} must be" in str(error.value)


@pytest.mark.parametrize(("section", "table"), [
    ("policy.rules", [{"name": "stuck", "priority": "high", "patterns": ["(x+x+)+y"]}]),
    ("facts", {"device": ["(x+x+)+y"]})], ids=["priority-rule", "fact-pattern"])
def test_an_operators_pattern_that_never_ends_on_a_mail_stops_only_that_mail(
        make_desk, section, table):
    """The priority rules and fact patterns are the operator's regexes, run on what a
    stranger wrote: one that backtracks for ever on a mail (nested repeats, here on a run
    of forty x) ends that mail's reader within the budget, the mail is quarantined with the
    budget's sentence and kept, and the next mail is filed."""
    desk = make_desk(NOW, limits={"max_seconds_per_mail": 1})
    desk.instance.settings[section] = table
    desk.instance.write()
    desk.ctx.reload(config.load(desk.instance.config_path))
    stuck = build_mail(subject="Gerät", text="Fehler: " + "x" * 40 + "\n",
                       message_id="stuck@kunde.example")

    assert desk.receive(stuck).status == "quarantined"
    [held] = desk.ctx.store.rows("SELECT sha256, error FROM quarantine")
    # stopped by its budget, the configured one
    assert held["error"] == OVER_BUDGET
    assert desk.ctx.spool.get(held["sha256"]) == stuck  # kept: it can be retried once fixed
    assert desk.receive(ordinary(1)).status == "created"
