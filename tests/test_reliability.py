"""Nothing lost, nothing twice: `mailbot run` killed mid-run, outages of IMAP and the relay, load.

The daemon runs as a real subprocess against the test Dovecot and the test SMTP sink
(its relay); the test watches its database, its log, /healthz and the sink.
"""

from __future__ import annotations

import concurrent.futures
import json
import smtplib
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hygiene_kit import DaemonProcess, query
from mails import build_mail, message_id_of
from servers import Dovecot, ImapAccount, SmtpSink, free_port, wait_until

CRASH_MAILS = 60
LOAD_CLIENTS = 4
LOAD_MAILS = 300
LOAD_IMAP_MAILS = 40
MEASURED: dict[str, object] = {}  # figures for the report (printed with -s)


def daemon_config(user: ImapAccount, sink: SmtpSink, web: int, admin: int, listener: int) -> str:
    """A complete mailbot.toml: read ``user``'s INBOX, send through ``sink``, serve /healthz."""
    return f"""
[service]
data_dir = "data"
instance_id = "mb-reliability"
[support]
address = "support@example.com"
signing_secret = "reliability-secret"
[listener]
enabled = {"true" if listener else "false"}
host = "127.0.0.1"
port = {listener or 2525}
[relay]
host = "{sink.host}"
port = {sink.port}
security = "plain"
timeout_seconds = 5
[outbox]
backoff_seconds = 0.2
max_backoff_seconds = 1.0
lifetime_days = 5
[notifications]
interval_seconds = 3600
[web]
enabled = true
host = "127.0.0.1"
port = {web}
base_url = "http://127.0.0.1:{web}"
max_source_failures = 1
[admin]
host = "127.0.0.1"
port = {admin}
[[imap]]
name = "support"
host = "{user.host}"
port = {user.port}
security = "plain"
username = "{user.username}"
password = "{user.password}"
done_folder = "Processed"
poll_seconds = 1
batch_size = 10
timeout_seconds = 10
"""


@pytest.fixture
def daemon_for(tmp_path: Path) -> Iterator:
    """Build (not start) a daemon for a mailbox; every daemon is stopped at teardown."""
    made: list[DaemonProcess] = []

    def build(user: ImapAccount, sink: SmtpSink, listener: int = 0) -> DaemonProcess:
        web, admin = free_port(), free_port()
        path = tmp_path / "mailbot.toml"
        path.write_text(daemon_config(user, sink, web, admin, listener), encoding="utf-8")
        daemon = DaemonProcess(path, tmp_path / "daemon.log", admin_port=admin)
        made.append(daemon)
        return daemon

    yield build
    for daemon in made:
        if daemon.process is not None:
            daemon.stop()


def db(daemon: DaemonProcess) -> Path:
    """The daemon's SQLite file."""
    return daemon.config_path.parent / "data" / "mailbot.sqlite3"


def count(daemon: DaemonProcess, sql: str) -> int:
    """One number from the daemon's database (0 before it exists)."""
    rows = query(db(daemon), sql)
    return rows[0][0] if rows else 0


def tickets(daemon: DaemonProcess) -> int:
    """How many tickets the daemon has filed."""
    return count(daemon, "SELECT COUNT(*) FROM tickets")


def unsent(daemon: DaemonProcess) -> int:
    """Outbox rows not yet delivered."""
    return count(daemon, "SELECT COUNT(*) FROM outbox WHERE status = 'pending'")


def healthz(daemon: DaemonProcess) -> tuple[int, dict]:
    """GET /healthz of the daemon (its admin listener): status code and document."""
    port = daemon.admin_port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def customer_mails(n: int, tag: str) -> list[bytes]:
    """``n`` distinct customer mails from distinct senders (no rate limit in the way)."""
    return [build_mail(sender=(f"Kunde {i}", f"kunde{i}.{tag}@kunde.example"),
                       subject=f"Anfrage {tag} {i}", text=f"Problem Nummer {i}.\n")
            for i in range(n)]


def settled(daemon: DaemonProcess, dovecot: Dovecot, user: ImapAccount, total: int) -> bool:
    """Every mail filed, moved out of the INBOX, and every outbox row delivered."""
    return (tickets(daemon) >= total and unsent(daemon) == 0
            and dovecot.message_count(user.username) == 0)


def test_sigkill_mid_run_loses_nothing_and_sends_nothing_twice(
        dovecot: Dovecot, imap_user: ImapAccount, smtp_sink: SmtpSink, daemon_for) -> None:
    """Killed with SIGKILL twice while filing 60 mails: each is one ticket, each answered once."""
    mails = customer_mails(CRASH_MAILS, "crash")
    dovecot.append_many(imap_user.username, "INBOX", mails)
    daemon = daemon_for(imap_user, smtp_sink)
    kills = []
    for at in (12, 35):
        daemon.start()
        wait_until(lambda at=at: tickets(daemon) >= at, 60, 0.005, f"{at} tickets")
        daemon.kill()
        kills.append(tickets(daemon))
    daemon.start()
    wait_until(lambda: settled(daemon, dovecot, imap_user, CRASH_MAILS), 60, 0.05,
               "all mails filed and answered")
    assert daemon.stop() == 0
    filed = Counter(r[0] for r in query(db(daemon), "SELECT message_id FROM messages "
                                                    "WHERE direction = 'in'"))
    assert sorted(filed) == sorted(message_id_of(m) for m in mails)
    assert set(filed.values()) == {1}
    assert tickets(daemon) == CRASH_MAILS
    acks = {r[0] for r in query(db(daemon), "SELECT message_id FROM outbox WHERE status = "
                                            "'sent' AND kind = 'acknowledgement'")}
    assert len(acks) == CRASH_MAILS
    received = Counter(message_id_of(m.raw) for m in smtp_sink.messages)
    assert set(received) == acks
    duplicates = sum(n - 1 for n in received.values())
    assert duplicates <= len(kills)
    assert dovecot.message_count(imap_user.username, "Processed") == CRASH_MAILS
    MEASURED["crash"] = {"kills_at_tickets": kills, "duplicates": duplicates, "missing": 0}


def test_imap_restart_and_relay_outage_catch_up(
        dovecot: Dovecot, imap_user: ImapAccount, smtp_sink: SmtpSink, daemon_for) -> None:
    """IMAP down and the relay down: /healthz says so, and afterwards everything catches up."""
    daemon = daemon_for(imap_user, smtp_sink)
    daemon.start()
    daemon.wait_log("mailbot running")
    dovecot.append_many(imap_user.username, "INBOX", customer_mails(5, "before"))
    wait_until(lambda: settled(daemon, dovecot, imap_user, 5), 20, 0.05, "first mails")
    assert healthz(daemon)[0] == 200

    smtp_sink.stop()
    dovecot.append_many(imap_user.username, "INBOX", customer_mails(5, "relay-down"))
    wait_until(lambda: tickets(daemon) >= 10, 20, 0.05, "filed while the relay is down")
    status, report = wait_until(lambda: unhealthy(daemon, "relay"), 20, 0.05, "relay 503")
    assert status == 503
    daemon.wait_log("delivery of")

    dovecot.stop()
    status, report = wait_until(lambda: unhealthy(daemon, "imap"), 20, 0.05, "IMAP 503")
    assert any("imap:support" in reason for reason in report["reasons"])
    dovecot.start()
    smtp_sink.start()
    dovecot.append_many(imap_user.username, "INBOX", customer_mails(5, "after"))
    wait_until(lambda: settled(daemon, dovecot, imap_user, 15), 40, 0.05, "caught up")
    wait_until(lambda: healthz(daemon)[0] == 200, 20, 0.05, "healthy again")
    assert daemon.stop() == 0
    assert len({message_id_of(m.raw) for m in smtp_sink.messages}) == 15
    assert tickets(daemon) == 15
    assert "reconnecting" in daemon.log()


def unhealthy(daemon: DaemonProcess, what: str) -> tuple[int, dict] | None:
    """/healthz while it names ``what`` among the reasons it is unavailable."""
    status, report = healthz(daemon)
    if status == 503 and any(what in r for r in report.get("reasons", [])):
        return status, report
    return None


def test_load_smtp_clients_and_imap_together(
        dovecot: Dovecot, imap_user: ImapAccount, smtp_sink: SmtpSink, daemon_for) -> None:
    """4 SMTP clients deliver 300 mails while IMAP runs: every 250 is a ticket, no 5xx."""
    listener = free_port()
    daemon = daemon_for(imap_user, smtp_sink, listener)
    daemon.start()
    daemon.wait_log("mailbot running")
    imap_mails = customer_mails(LOAD_IMAP_MAILS, "imap")
    batches = [customer_mails(LOAD_MAILS // LOAD_CLIENTS, f"smtp{c}") for c in
               range(LOAD_CLIENTS)]
    dovecot.append_many(imap_user.username, "INBOX", imap_mails)
    with concurrent.futures.ThreadPoolExecutor(LOAD_CLIENTS) as pool:
        results = list(pool.map(lambda batch: deliver_all(listener, batch), batches))
    accepted = [mid for ok, _ in results for mid in ok]
    refused = [code for _, codes in results for code in codes]
    assert not [c for c in refused if c >= 500], refused
    assert len(accepted) == LOAD_MAILS
    total = LOAD_MAILS + LOAD_IMAP_MAILS
    wait_until(lambda: settled(daemon, dovecot, imap_user, total), 90, 0.1, "load filed")
    peak = daemon.peak_rss_kb()
    assert daemon.stop() == 0
    filed = {r[0] for r in query(db(daemon), "SELECT message_id FROM messages")}
    assert set(accepted) <= filed
    assert {message_id_of(m) for m in imap_mails} <= filed
    assert tickets(daemon) == total
    MEASURED["load"] = {"mails": total, "vmhwm_kb": peak,
                        "temporary_refusals": len(refused)}  # timing: bench/load.py
    print(f"\nmeasured: {MEASURED}")
    assert peak < 400_000


def deliver_all(port: int, mails: list[bytes]) -> tuple[list[str], list[int]]:
    """Send over one SMTP connection; the Message-IDs accepted, refusal codes (4xx retried)."""
    accepted, refused = [], []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for raw in mails:
            for _attempt in range(5):
                try:
                    client.sendmail("kunde@kunde.example", ["support@example.com"], raw)
                except smtplib.SMTPResponseException as exc:
                    refused.append(exc.smtp_code)
                    if exc.smtp_code >= 500:
                        break
                    continue
                accepted.append(message_id_of(raw))
                break
    return accepted, refused
