"""Run mailbot the way an operator does, for end-to-end tests.

:class:`Instance` is one mailbot installation in a temp dir: its ``mailbot.toml``,
its CLI (in-process through click, or as a real process) and a read-only view of its
database for waiting on conditions.  :class:`DaemonProcess` runs ``python -m mailbot
run`` as a subprocess, waits until it is ready and stops it with SIGTERM, asserting
the clean exit code 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from click.testing import CliRunner, Result
from psycopg.rows import dict_row
from servers import LOOPBACK, ImapAccount, SmtpSink, free_port, wait_until

from mailbot.app.cli import main as cli_main
from mailbot.store import Store
from mailbot.store.dialect import to_pyformat
from mailbot.store.postgres import WRITE_LOCK

REPO = Path(__file__).resolve().parent.parent
SECRET = "test-signing-secret-0123456789"


def toml_dumps(data: dict) -> str:
    """TOML text for a config: top-level tables, arrays of tables, inline secret tables."""
    lines: list[str] = []
    for section, body in data.items():
        tables = body if isinstance(body, list) else [body]
        header = f"[[{section}]]" if isinstance(body, list) else f"[{section}]"
        for table in tables:
            lines.append(header)
            lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
            lines.append("")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def base_settings(data_dir: Path) -> dict:
    """A config with everything off but a listener on a free port and the outbox Maildir."""
    return {
        "service": {"data_dir": str(data_dir), "log_level": "INFO"},
        "support": {"address": "support@example.com", "signing_secret": SECRET},
        "listener": {"enabled": True, "host": LOOPBACK, "port": free_port()},
        "relay": {"host": ""},
        "outbox": {"backoff_seconds": 0.2, "max_backoff_seconds": 1},
        "web": {"enabled": False, "base_url": "https://support.example.com"},
        "admin": {"enabled": False},
    }


def imap_settings(account: ImapAccount, **overrides: object) -> dict:
    """An ``[[imap]]`` table for a test Dovecot user (plain, Processed, Quarantine)."""
    return {"name": "support", "host": account.host, "port": account.port,
            "security": "plain", "username": account.username, "password": account.password,
            "done_folder": "Processed", "quarantine_folder": "Quarantine",
            "poll_seconds": 2, "timeout_seconds": 5, **overrides}


class Instance:
    """One mailbot installation under test: config file, data dir, CLI and database view."""

    def __init__(self, root: Path, settings: dict | None = None) -> None:
        self.root = root
        self.config_path = root / "mailbot.toml"
        self.settings = settings or base_settings(root / "data")
        self.write()

    @classmethod
    def for_servers(cls, root: Path, imap: ImapAccount | None = None,
                    sink: SmtpSink | None = None) -> Instance:
        """An instance reading ``imap`` (if given) and relaying to ``sink`` (if given)."""
        instance = cls(root)
        if imap is not None:
            instance.settings["imap"] = [imap_settings(imap)]
        if sink is not None:
            instance.settings["relay"] = {"host": sink.host, "port": sink.port,
                                          "security": "plain", "timeout_seconds": 5}
        instance.write()
        return instance

    def write(self) -> None:
        """Write the current settings to ``mailbot.toml``."""
        self.config_path.write_text(toml_dumps(self.settings), encoding="utf-8")

    def update(self, section: str, **values: object) -> None:
        """Change some keys of one section and rewrite the file."""
        self.settings.setdefault(section, {}).update(values)
        self.write()

    @property
    def listener(self) -> tuple[str, int]:
        """Host and port of the SMTP/LMTP listener."""
        listener = self.settings["listener"]
        return listener["host"], listener["port"]

    @property
    def db_path(self) -> Path:
        """The SQLite file of this instance."""
        return Path(self.settings["service"]["data_dir"]) / "mailbot.sqlite3"

    # -- the CLI -------------------------------------------------------------------------------

    def cli(self, *args: str, input: bytes | None = None) -> Result:
        """Run a `mailbot` command in this process (fast; same code as the real command)."""
        return CliRunner().invoke(cli_main, ["--config", str(self.config_path), *args],
                                  input=input, catch_exceptions=False)

    def cli_json(self, *args: str) -> object:
        """The parsed output of a `mailbot ... --json` command that must succeed."""
        result = self.cli(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def run(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run `python -m mailbot --config ... ARGS` as a real process and wait for it."""
        return run_mailbot(self.config_path, *args, input=input)

    def tickets(self) -> list[dict]:
        """All tickets, from `mailbot tickets list --all --json`."""
        return self.cli_json("tickets", "list", "--all", "--limit", "1000000")

    def ticket(self, number: str) -> dict:
        """One ticket, from `mailbot tickets show NUMBER --json`."""
        return self.cli_json("tickets", "show", number)

    def only_ticket(self) -> dict:
        """The one ticket this instance has; fails when there are none or more."""
        found = self.tickets()
        assert len(found) == 1, f"expected one ticket, got {[t['number'] for t in found]}"
        return self.ticket(found[0]["number"])

    # -- the database, read-only, for waiting --------------------------------------------------

    @property
    def store_url(self) -> str:
        """The PostgreSQL URL of this instance's store, or "" for SQLite in its data_dir."""
        return self.settings.get("store", {}).get("url", "")

    def query(self, sql: str, params: tuple = ()) -> list[dict]:
        """Rows of a read-only query; empty while the database does not exist yet."""
        if self.store_url:
            with psycopg.connect(self.store_url, row_factory=dict_row) as conn:
                return conn.execute(to_pyformat(sql), params).fetchall()
        if not self.db_path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, params)]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()

    def count(self, table: str, where: str = "TRUE") -> int:
        """How many rows of ``table`` match ``where``."""
        rows = self.query(f"SELECT COUNT(*) AS n FROM {table} WHERE {where}")  # noqa: S608
        return rows[0]["n"] if rows else 0

    @contextlib.contextmanager
    def write_locked(self) -> Iterator[None]:
        """Hold the database's write lock from another connection, like a long transaction."""
        self.cli("tickets", "list")  # creates and migrates the database
        if self.store_url:  # the lock every PostgreSQL write transaction takes first
            with psycopg.connect(self.store_url) as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                yield
            return
        conn = sqlite3.connect(self.db_path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()

    def wait_tickets(self, n: int, timeout: float = 10.0) -> list[dict]:
        """Wait until at least ``n`` tickets exist; return them (ticket list rows)."""
        wait_until(lambda: self.count("tickets") >= n, timeout, message=f"{n} ticket(s)")
        return self.tickets()

    def start(self, **kwargs: object) -> DaemonProcess:
        """Start `mailbot run` on this instance and wait until it is ready."""
        daemon = DaemonProcess(self.config_path,
                               self.listener if self.settings["listener"]["enabled"] else None)
        daemon.start(**kwargs)
        return daemon


def rows_read(store: Store, work: Callable[[], object]) -> int:
    """How many rows ``work()`` reads from ``store``: what a scheduled round costs in memory
    and time, whatever the clock says."""
    read = [0]
    real_rows, real_row = store.rows, store.row

    def rows(*args, **kwargs):
        found = real_rows(*args, **kwargs)
        read[0] += len(found)
        return found

    def row(*args, **kwargs):
        found = real_row(*args, **kwargs)
        read[0] += found is not None
        return found

    store.rows, store.row = rows, row
    try:
        work()
    finally:
        del store.rows, store.row
    return read[0]


def run_mailbot(config_path: Path, *args: str,
                input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m mailbot --config PATH ARGS` as a real process; output is captured."""
    return subprocess.run([sys.executable, "-m", "mailbot", "--config", str(config_path), *args],
                          input=input, capture_output=True, env=process_env(), timeout=60,
                          check=False)


def process_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a mailbot subprocess: this checkout first on the import path."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


class DaemonProcess:
    """`python -m mailbot --config X run` as a subprocess, its stderr kept in a log file."""

    def __init__(self, config_path: Path, listener: tuple[str, int] | None) -> None:
        self.config_path = config_path
        self.listener = listener
        self.log_path = config_path.with_name(f"daemon-{time.monotonic_ns()}.log")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0, env: dict[str, str] | None = None,
              wait: bool = True) -> None:
        """Start the daemon; return once the listener answers (or it logged that it runs).

        ``env`` adds variables (e.g. NOTIFY_SOCKET); ``wait=False`` returns at once.
        """
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailbot", "--config", str(self.config_path), "run"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=process_env(env))
        if wait:
            wait_until(self._ready, timeout, interval=0.02,
                       message=f"mailbot ready\n{self.log()}")

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"mailbot exited with {self.process.returncode}:\n{self.log()}")
        if self.listener is None:
            return "mailbot running" in self.log()
        try:
            with socket.create_connection(self.listener, timeout=1):
                return True
        except OSError:
            return False

    def log(self) -> str:
        """Everything the daemon logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 10.0) -> None:
        """Wait until the daemon logged ``text``."""
        wait_until(lambda: text in self.log(), timeout, message=f"log line {text!r}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, wait, and assert the clean exit code 0."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            process.kill()
            process.wait()
            raise AssertionError(f"mailbot ignored SIGTERM for {timeout}s:\n{self.log()}") from exc
        assert code == 0, f"mailbot exited with {code} after SIGTERM:\n{self.log()}"

    def kill(self) -> None:
        """Crash the daemon with SIGKILL (no shutdown at all)."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.stop()
        else:
            self.kill()


# Runs `python -m mailbot ARGS` and writes its peak resident memory (kB) to stderr at exit.
MEASURED = """\
import atexit, runpy, sys
def peak():
    hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")]
    sys.stderr.write(f"peak-kB {hwm[0]}\\n")
atexit.register(peak)
sys.argv[0] = "mailbot"
runpy.run_module("mailbot", run_name="__main__", alter_sys=True)
"""


def run_measured(config: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run a `mailbot` command as a process of its own; its result and peak memory in MB."""
    result = subprocess.run([sys.executable, "-c", MEASURED, "--config", str(config), *args],
                            capture_output=True, text=True, cwd=REPO, env=process_env(),
                            timeout=600)
    peaks = [line.split()[1] for line in result.stderr.splitlines()
             if line.startswith("peak-kB ")]
    assert peaks, result.stderr[-2000:]
    return result, int(peaks[-1]) / 1024
