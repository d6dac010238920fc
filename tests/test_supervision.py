"""Sources never die quietly: supervision, the health board, `mailbot status`, the watchdog.

Real Dovecot mailboxes, the real listener and real daemon processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import smtplib
import socket

import pytest
from daemon_util import Instance, imap_settings
from mails import build_mail
from servers import wait_until

from mailbot.app.supervisor import supervise
from mailbot.inbound.imap import ImapSource, connect
from mailbot.inbound.source import Feed
from mailbot.settings.config import ImapConfig
from mailbot.status.health import Health, report
from mailbot.tickets.outcome import Outcome


def status(bot: Instance) -> tuple[int, dict]:
    """`mailbot status --json`: its exit code and document."""
    result = bot.cli("status", "--json")
    return result.exit_code, json.loads(result.stdout)


def status_when(bot: Instance, code: int) -> dict | None:
    """The status document once `mailbot status` exits with ``code``, else None."""
    exit_code, document = status(bot)
    return document if exit_code == code else None


def source_state(bot: Instance, name: str) -> dict:
    """One source's line of `mailbot status`."""
    return next((s for s in status(bot)[1]["sources"] if s["name"] == name), {})


def deliver(listener: tuple[str, int], raw: bytes) -> tuple[int, bytes]:
    """One SMTP delivery; the server's answer to the end of DATA."""
    with smtplib.SMTP(*listener, timeout=30) as client:
        client.ehlo()
        client.mail("kunde@example.org")
        client.rcpt("support@example.com")
        return client.data(raw)


def test_six_mailboxes_and_the_listener_all_keep_working(tmp_path, dovecot):
    """Six IDLE mailboxes do not starve the listener: every SMTP mail gets its 250 and
    every mail of the steady IMAP stream is filed."""
    users = [dovecot.new_user() for _ in range(6)]
    bot = Instance(tmp_path)
    bot.settings["imap"] = [imap_settings(u, name=f"box{i}") for i, u in enumerate(users)]
    bot.write()
    with bot.start() as daemon:
        wait_until(lambda: all(source_state(bot, f"imap:box{i}").get("state") == "connected"
                               for i in range(6)), 20, 0.1, "six mailboxes connected")
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = pool.map(lambda n: deliver(daemon.listener,
                                                 build_mail(subject=f"SMTP {n}")), range(20))
            for n in range(30):
                dovecot.append(users[n % 6].username, "INBOX", build_mail(subject=f"IMAP {n}"))
            assert [code for code, _ in answers] == [250] * 20
        bot.wait_tickets(50, timeout=60)

        def counted() -> dict | None:  # the status file is rewritten every few seconds
            counts = {s["name"]: s["handled"] for s in status(bot)[1]["sources"]}
            imap = sum(counts.get(f"imap:box{i}", 0) for i in range(6))
            return counts if imap == 30 else None

        counts = wait_until(counted, 20, 0.2, "30 IMAP mails counted")
        assert counts[f"smtp:127.0.0.1:{daemon.listener[1]}"] == 20


def test_refused_login_makes_health_503_then_200_when_the_server_accepts(tmp_path, dovecot):
    """A mailbox whose login is refused shows in `mailbot status` and /healthz, and
    recovers by itself once the server accepts the login again."""
    user = dovecot.new_user()
    bot = Instance(tmp_path)
    bot.settings["imap"] = [imap_settings(user)]
    bot.settings["web"].update(max_source_failures=2)
    bot.settings["admin"].update(enabled=True, port=free_web_port())
    bot.write()
    dovecot.add_user(user.username, "changed-password")
    with bot.start():
        document = wait_until(lambda: status_when(bot, 1), 30, 0.2,
                              "status reports the refused login")
        assert any(r.startswith("source imap:support retrying after") for r in
                   document["reasons"])
        assert "LOGIN" in source_state(bot, "imap:support")["last_error"].upper()
        assert healthz(bot)[0] == 503
        dovecot.add_user(user.username, user.password)
        wait_until(lambda: status_when(bot, 0), 30, 0.2, "status ok again")
        assert healthz(bot)[0] == 200
        assert source_state(bot, "imap:support")["state"] == "connected"


def free_web_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthz(bot: Instance) -> tuple[int, dict]:
    """GET /healthz of the instance's admin listener."""
    import urllib.error
    import urllib.request
    url = f"http://127.0.0.1:{bot.settings['admin']['port']}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_source_that_raises_is_logged_and_restarted(dovecot, caplog):
    """An error that is not a network error (here on the first connect) is logged with its
    traceback, counted on the board, and the source is started again and files the mail."""
    user = dovecot.new_user()
    dovecot.append(user.username, "INBOX", build_mail(subject="Nach dem Neustart"))
    cfg = ImapConfig(host=user.host, port=user.port, username=user.username,
                     password=user.password, security="plain", done_folder="Processed")
    attempts = []

    def flaky_connect(config: ImapConfig):
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("database is locked while reconnecting")
        return connect(config)

    filed: list[bytes] = []
    health = Health()
    source = ImapSource(cfg, lambda mailbox, value: True, health, factory=flaky_connect)

    def file(raw: bytes, origin: str) -> Outcome:
        filed.append(raw)
        return Outcome("created")

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(supervise(source.name, lambda: source.serve(
            Feed(file=file, flush=lambda: None), stop), health, stop))
        await asyncio.to_thread(wait_until, lambda: filed, 15, 0.02, "the mail filed")
        stop.set()
        await asyncio.wait_for(task, 15)

    asyncio.run(scenario())
    assert len(filed) == 1
    failure = next(r for r in caplog.records if "database is locked" in r.getMessage())
    assert failure.exc_info is not None  # with its traceback
    [state] = health.states()
    assert state.last_error == "RuntimeError: database is locked while reconnecting"
    assert state.failures == 0 and state.last_success is not None  # recovered


def test_a_loop_without_progress_is_reported_stuck(tmp_path):
    """A loop that should be working but shows no progress makes the health report fail."""
    from mailbot.store import Store

    store = Store(tmp_path / "db.sqlite3")
    health = Health()
    health.watch("outbox", stuck_after=0.05, state="running")
    assert report(store, health, 5)["status"] == "ok"
    document = wait_until(lambda: (d := report(store, health, 5))["status"] != "ok" and d, 5,
                          0.02, "stuck reported")
    assert document["reasons"][0].startswith("source outbox stuck: no progress for")
    health.beat("outbox")
    assert report(store, health, 5)["status"] == "ok"
    store.close()


def test_systemd_hears_ready_watchdog_and_stopping(tmp_path):
    """Under systemd (Type=notify) the daemon says READY, feeds the watchdog while its loops
    work, reports a STATUS line, and says STOPPING on SIGTERM."""
    bot = Instance(tmp_path)
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(20)
        daemon = bot.start(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"})
        heard: list[str] = []
        while heard.count("WATCHDOG=1") < 3:
            heard.append(sock.recv(4096).decode())
        assert heard.index("READY=1") < len(heard)
        assert any(m.startswith("STATUS=ok") for m in heard)
        daemon.stop()
        while "STOPPING=1" not in heard:
            heard.append(sock.recv(4096).decode())


def test_status_without_a_daemon_says_so(tmp_path):
    """`mailbot status` with no daemon running exits 3 and says why."""
    bot = Instance(tmp_path)
    code, document = status(bot)
    assert code == 3 and document["status"] == "not running"
    assert "does not exist" in document["reasons"][0]


@pytest.fixture(autouse=True)
def _quiet(caplog):
    caplog.set_level("INFO")


