"""Small helpers for the hygiene, limits, fuzz, ping-pong and reliability tests.

An in-process mailbot (config file + context on a real SQLite file), a settable
clock, outbox and ticket lookups, the CLI, and a `mailbot run` subprocess runner.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner, Result
from servers import wait_until

from mailbot.app import cli, reports
from mailbot.context import Context, open_context
from mailbot.inbound import pipeline
from mailbot.outbound import sender
from mailbot.outbound.transports import transport_for
from mailbot.settings import config
from mailbot.tickets.outcome import Outcome

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SUPPORT = "support@example.com"
ALIAS = "hilfe@example.com"
BASE_TOML = """\
[service]
data_dir = "data"
instance_id = "{instance}"
log_level = "INFO"
[support]
address = "{address}"
aliases = [{aliases}]
signing_secret = "test-secret-{instance}"
[listener]
enabled = false
[web]
enabled = false
[admin]
enabled = false
"""


class Clock:
    """A settable clock: Tuesday 24 Nov 2026, 10:00 Berlin time, until moved."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 24, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        """Move the clock forward and return the new time."""
        self.now += timedelta(**delta)
        return self.now


def write_config(root: Path, extra: str = "", instance: str = "mb-test",
                 address: str = SUPPORT, aliases: tuple[str, ...] = (ALIAS,)) -> Path:
    """Write ``root/mailbot.toml`` (base settings plus ``extra`` TOML) and return its path."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "mailbot.toml"
    names = ", ".join(f'"{a}"' for a in aliases)
    path.write_text(BASE_TOML.format(instance=instance, address=address, aliases=names)
                    + extra, encoding="utf-8")
    return path


def make_ctx(root: Path, extra: str = "", clock: Clock | None = None, **kw: str) -> Context:
    """An in-process mailbot whose config file and data directory live under ``root``."""
    cfg = config.load(write_config(root, extra, **kw), require_file=True)
    return open_context(cfg, clock=clock or Clock())


def ingest(ctx: Context, raw: bytes, source: str = "test") -> Outcome:
    """File one mail through the real pipeline."""
    return pipeline.ingest(ctx, raw, source)


def outbox_rows(ctx: Context, kind: str | None = None) -> list[dict]:
    """Outbox rows (with raw bytes and decoded recipients), oldest first."""
    rows = ctx.store.rows("SELECT * FROM outbox ORDER BY id")
    for row in rows:
        row["recipients"] = json.loads(row["recipients"])
    return [r for r in rows if kind is None or r["kind"] == kind]


def acks_to(ctx: Context, address: str) -> list[dict]:
    """Acknowledgements queued for ``address``."""
    return [r for r in outbox_rows(ctx, "acknowledgement") if address in r["recipients"]]


def ticket_count(ctx: Context) -> int:
    """How many tickets exist."""
    return ctx.store.row("SELECT COUNT(*) AS n FROM tickets")["n"]


def detail(ctx: Context, number: str) -> dict:
    """The `tickets show --json` document of a ticket."""
    data = reports.ticket_detail(ctx.store, number)
    assert data is not None, f"no ticket {number}"
    return data


def run_cli(ctx: Context, *args: str) -> Result:
    """Run the real `mailbot` CLI against this instance's config file."""
    path = str(Path(ctx.config.source_path) / "mailbot.toml")
    return CliRunner().invoke(cli.main, ["--config", path, *args], catch_exceptions=False)


def deliver(ctx: Context) -> int:
    """Run the outbox sender once with the configured transport; the number delivered."""
    return asyncio.run(sender.deliver_due(ctx, transport_for(ctx.config)))


def parsed(raw: bytes) -> email.message.EmailMessage:
    """A raw mail parsed with the modern policy (bodies decoded by get_content)."""
    return email.message_from_bytes(raw, policy=email.policy.default)


def body_text(raw: bytes) -> str:
    """Subject and decoded text of every text part of a mail, for content checks."""
    msg = parsed(raw)
    texts = [str(msg.get("Subject", ""))]
    texts += [p.get_content() for p in msg.walk() if p.get_content_maintype() == "text"]
    return "\n".join(texts)


def replace_headers(raw: bytes, **headers: str | None) -> bytes:
    """A copy of a mail with headers replaced (``None`` removes); names use _ for -."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    for key, value in headers.items():
        name = key.replace("_", "-")
        del msg[name]
        if value is not None:
            msg[name] = value
    return msg.as_bytes()


# -- `mailbot run` as a subprocess --------------------------------------------------------------


@dataclass
class DaemonProcess:
    """One `mailbot run` child process with its log file."""

    config_path: Path
    log_path: Path
    admin_port: int = 0  # where /healthz and /metrics answer
    process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the daemon; returns at once (wait for what you need with wait_until)."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailbot", "--config", str(self.config_path), "run"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=ROOT)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        """Everything the daemon logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 20.0, after: int = 0) -> None:
        """Wait until the log (from character ``after``) contains ``text``."""
        wait_until(lambda: text in self.log()[after:] or self._dead(), timeout,
                   message=f"daemon log line {text!r}")
        assert not self._dead(), f"daemon exited:\n{self.log()[-3000:]}"

    def _dead(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def peak_rss_kb(self) -> int:
        """VmHWM of the running daemon, in kB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def kill(self) -> None:
        """SIGKILL: a crash, no cleanup at all."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM and wait for a clean exit; the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def query(db_path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the daemon's database from outside (a separate connection, like an operator)."""
    if not db_path.exists():
        return []
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()
