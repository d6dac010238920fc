"""The operators' side: /healthz and /metrics on the admin listener only, no file paths in
them, and private file modes whatever the umask.

The endpoints are tested over real HTTP against the real aiohttp application (aiohttp's
TestServer) and against real `mailbot run` processes; the file modes after real
`mailbot ingest` and `mailbot run` processes started with the umask 022.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from daemon_util import Instance
from mails import build_mail
from servers import LOOPBACK, free_port, wait_until
from webutil import context_for, customer_mail, file_ticket, write_config

from mailbot.context import Context
from mailbot.outbound import sender
from mailbot.outbound.transports import transport_for
from mailbot.store import outbox as oq
from mailbot.web.admin import make_admin_app

# An absolute path as it would show in a text: a "/" opening a word, then a name.
ABSOLUTE_PATH = re.compile(r"(?:^|[\s'\"(=,\[])/\w")


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    """A mailbot context on a real config and database in tmp_path."""
    context = context_for(write_config(tmp_path, web_port=8080))
    yield context
    context.store.close()


@pytest.fixture
async def admin(ctx: Context) -> AsyncIterator[TestClient]:
    """An HTTP client of the admin application served on a free loopback port."""
    async with TestClient(TestServer(make_admin_app(ctx))) as http:
        yield http


# -- the admin application ---------------------------------------------------------------------


async def test_healthz_ok_when_database_writable_and_sources_fine(ctx, admin):
    """/healthz answers 200 when the database is writable and sources connect or retry a bit."""
    ctx.health.set("imap:support", "connected")
    for _ in range(4):
        ctx.health.set("imap:backup", "retrying", "connection refused")
    response = await admin.get("/healthz")
    assert response.status == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    report = await response.json()
    assert report["status"] == "ok" and report["reasons"] == []
    assert {s["name"]: s["state"] for s in report["sources"]} == {
        "imap:support": "connected", "imap:backup": "retrying"}


async def test_healthz_503_when_a_source_keeps_failing(ctx, admin):
    """/healthz answers 503 naming the source once it failed too often or stopped."""
    for _ in range(5):
        ctx.health.set("imap:support", "retrying", "LOGIN failed")
    ctx.health.set("smtp:127.0.0.1:2525", "stopped")
    response = await admin.get("/healthz")
    assert response.status == 503
    reasons = (await response.json())["reasons"]
    assert reasons == ["source imap:support retrying after 5 failures: LOGIN failed",
                       "source smtp:127.0.0.1:2525 stopped"]


async def test_healthz_503_when_database_not_writable(ctx, admin):
    """/healthz answers 503 with the reason when the database cannot be written."""
    ctx.store.close()
    response = await admin.get("/healthz")
    assert response.status == 503
    assert (await response.json())["reasons"][0].startswith("database not writable")


async def test_health_errors_keep_their_kind_but_lose_their_paths(ctx, admin):
    """Errors that name files (a CA file, a Maildir) still say what went wrong, in place of
    the path "<path>"; addresses, URLs and "I/O" stay as they are."""
    for _ in range(5):
        ctx.health.set("imap:support", "retrying",
                       "FileNotFoundError: [Errno 2] No such file or directory: "
                       "'/etc/mailbot/private-ca.pem'")
    ctx.health.set("relay:smtp://relay.example.com:587", "retrying",
                   "OperationalError: disk I/O error in /var/lib/mailbot/mailbot.sqlite3")
    response = await admin.get("/healthz")
    text = await response.text()
    assert ABSOLUTE_PATH.search(text) is None, text
    report = json.loads(text)
    assert report["reasons"] == [
        "source imap:support retrying after 5 failures: FileNotFoundError: [Errno 2] "
        "No such file or directory: '<path>'"]
    relay = next(s for s in report["sources"] if s["name"].startswith("relay:"))
    assert relay["name"] == "relay:smtp://relay.example.com:587"
    assert relay["last_error"] == "OperationalError: disk I/O error in <path>"


async def test_metrics_count_mails_outbox_latency_and_sources(ctx, admin):
    """/metrics shows mails ingested, tickets, outbox state, ack latency and sources."""
    ctx.health.set("imap:support", "connected")
    file_ticket(ctx)
    file_ticket(ctx, customer_mail(subject="Zweites"))
    assert oq.outbox_counts(ctx.store)["pending"] > 0
    text = await (await admin.get("/metrics")).text()
    assert 'mailbot_mails_ingested_total{outcome="created"} 2.0' in text
    assert 'mailbot_mails_ingested_total{outcome="quarantined"} 0.0' in text
    assert "mailbot_tickets_created_total 2.0" in text
    assert re.search(r'mailbot_outbox_mails\{status="pending"\} [1-9]', text)
    assert 'mailbot_outbox_mails{status="failed"} 0.0' in text
    assert 'mailbot_source_connected{source="imap:support"} 1.0' in text
    assert "mailbot_acknowledgement_latency_seconds_count 0.0" in text
    assert "mailbot_quarantine_mails 0.0" in text
    assert re.search(r"mailbot_outbox_oldest_pending_seconds [0-9.e+]+", text)
    await sender.deliver_due(ctx, transport_for(ctx.config))
    text = await (await admin.get("/metrics")).text()
    assert "mailbot_acknowledgement_latency_seconds_count 2.0" in text
    assert "mailbot_outbox_oldest_pending_seconds 0.0" in text  # nothing waits any more
    assert 'mailbot_outbox_mails{status="pending"} 0.0' in text


async def test_the_admin_listener_serves_nothing_else(admin):
    """The admin listener has no customer pages."""
    assert (await admin.get("/t/anything")).status == 404


# -- the daemon --------------------------------------------------------------------------------


def get(port: int, path: str) -> tuple[int, str]:
    """GET ``path`` on a loopback port: the status and the body; 0 while nobody listens."""
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_operators_endpoints_answer_on_the_admin_port_only_and_name_no_paths(tmp_path):
    """A running mailbot answers /healthz and /metrics on its admin port, 404 on the customer
    port; with its Maildir unwritable the relay shows as "relay:maildir" with the kind of
    error, and neither the health document, the metrics nor the status file name a path."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the Maildir's parent should be\n")
    bot = Instance(tmp_path)
    bot.settings["web"].update(enabled=True, host=LOOPBACK, port=free_port())
    bot.settings["admin"].update(enabled=True, host=LOOPBACK, port=free_port())
    bot.settings["relay"]["maildir"] = str(blocker / "maildir")
    bot.write()
    assert bot.run("ingest", input=build_mail()).returncode == 0  # an acknowledgement to send
    web, admin = bot.settings["web"]["port"], bot.settings["admin"]["port"]
    with bot.start():

        def relay_failed() -> dict | None:
            status, body = get(admin, "/healthz")
            sources = {s["name"]: s for s in json.loads(body)["sources"]} if body else {}
            relay = sources.get("relay:maildir", {})
            return {"status": status, "body": body} if relay.get("failures") else None

        health = wait_until(relay_failed, 20, 0.1, "the relay's failure on /healthz")
        metrics_status, metrics = get(admin, "/metrics")
        status_file = (Path(bot.settings["service"]["data_dir"]) / "status.json").read_text()
        for path in ("/healthz", "/metrics"):
            status, page = get(web, path)
            assert status == 404 and "Nicht gefunden" in page, path
    relay = next(s for s in json.loads(health["body"])["sources"] if s["name"] == "relay:maildir")
    assert "Not a directory" in relay["last_error"]
    assert metrics_status == 200 and 'mailbot_source_failures{source="relay:maildir"}' in metrics
    for text in (health["body"], metrics, status_file):
        assert str(tmp_path) not in text
        assert ABSOLUTE_PATH.search(text) is None, text


def test_a_taken_admin_port_stops_the_start(tmp_path):
    """`mailbot run` whose admin port another program holds says which and exits 69."""
    with socket.socket() as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen()
        port = holder.getsockname()[1]
        bot = Instance(tmp_path)
        bot.update("admin", enabled=True, host=LOOPBACK, port=port)
        result = bot.run("run")
    assert result.returncode == 69, result.stderr.decode()
    assert f"admin listener {LOOPBACK}:{port}" in result.stderr.decode()


# -- file modes --------------------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    """Processes started by this test inherit the common umask 022 (files 0644)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def loose_modes(root: Path) -> dict[str, str]:
    """Everything under ``root`` (and itself) that is not 0700 (folders) or 0600 (files)."""
    found = {}
    for path in (root, *root.rglob("*")):
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode != (0o700 if path.is_dir() else 0o600):
            found[str(path.relative_to(root))] = oct(mode)
    return found


def test_files_are_private_after_ingest_and_run_whatever_the_umask(tmp_path, umask_022):
    """Started with the umask 022, `mailbot ingest` and `mailbot run` still leave the data
    directory 0700 and every file in it 0600: database, spool, attachments, the outbound
    Maildir and the status file."""
    bot = Instance(tmp_path)
    data = Path(bot.settings["service"]["data_dir"])
    mail = build_mail(attachments=(("messwerte.csv", "text/csv", b"a;b\n1;2\n"),))
    result = bot.run("ingest", input=mail)
    assert result.returncode == 0, result.stderr.decode()
    assert any((data / "files").rglob("*")) and any((data / "spool").rglob("*"))
    assert loose_modes(data) == {}
    with bot.start():
        wait_until(lambda: any((data / "maildir" / "new").glob("*"))
                   and (data / "status.json").exists(), 15, message="ack delivered, status")
        assert loose_modes(data) == {}
    assert loose_modes(data) == {}
