"""Shared helpers of the benchmarks: config files, daemon subprocesses, a timing SMTP sink,
read-only looks into the SQLite database, and a small table printer.

Not a benchmark itself.  Uses the test servers from ``tests/servers.py`` (real Dovecot,
real aiosmtpd sink) through ``sys.path``.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
TESTS = REPO / "tests"
# bench/ first: tests/ has modules of the same name (mails.py); tests/ only for servers.py.
for _path in (str(BENCH), str(REPO)):
    if _path in sys.path:
        sys.path.remove(_path)
sys.path[:0] = [str(BENCH), str(REPO)]
if str(TESTS) not in sys.path:
    sys.path.append(str(TESTS))

from servers import Dovecot, SmtpSink, free_port, wait_until  # noqa: E402

__all__ = [
    "REPO",
    "DaemonProcess",
    "Db",
    "Dovecot",
    "SmtpSink",
    "TimedSink",
    "free_port",
    "listening",
    "percentile",
    "table",
    "wait_until",
    "write_config",
]

IN_REPLY_TO = re.compile(rb"^In-Reply-To:[ \t]*<([^>\r\n]+)>", re.IGNORECASE | re.MULTILINE)


class TimedSink(SmtpSink):
    """The test SMTP sink, remembering when each mail arrived and what it replies to.

    ``arrivals[message_id]`` lists the monotonic arrival times of the mails whose
    In-Reply-To is ``message_id`` (an acknowledgement of that inbound mail).
    """

    def __init__(self, *args, keep_messages: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.count = 0
        self.keep_messages = keep_messages
        self._cond = threading.Condition()

    def _store(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> None:
        now = time.monotonic()
        head = raw.split(b"\r\n\r\n", 1)[0]
        match = IN_REPLY_TO.search(head)
        with self._cond:
            if match:
                self.arrivals[match.group(1).decode("ascii", "replace")].append(now)
            self.count += 1
            self._cond.notify_all()
        if self.keep_messages:
            super()._store(mail_from, rcpt_tos, raw)

    def acked(self, message_ids) -> int:
        """How many of ``message_ids`` have at least one acknowledgement."""
        with self._cond:
            return sum(1 for m in message_ids if m in self.arrivals)

    def wait_acked(self, message_ids, timeout: float) -> bool:
        """Wait until every one of ``message_ids`` has an acknowledgement."""
        ids = list(message_ids)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if all(m in self.arrivals for m in ids):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))

    def first_arrival(self, message_id: str) -> float | None:
        with self._cond:
            times = self.arrivals.get(message_id)
            return times[0] if times else None


_LIVE: list[DaemonProcess] = []


def _kill_all() -> None:
    for proc in list(_LIVE):
        proc.kill()


atexit.register(_kill_all)


class DaemonProcess:
    """``python -m mailbot --config CFG run`` as a child process, logging to a file."""

    def __init__(self, config: Path, log: Path, args: tuple[str, ...] = ("run",)) -> None:
        self.config = config
        self.log = log
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> DaemonProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("MAILBOT_CONFIG", None)
        with open(self.log, "ab") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailbot", "--config", str(self.config), *self.args],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True)
        _LIVE.append(self)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"mailbot exited with {self.proc.returncode}; log tail:\n"
                               f"{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def status(self, key: str) -> int:
        """A value in kB from /proc/<pid>/status (VmHWM, VmRSS), 0 once gone."""
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except (OSError, AssertionError):
            return 0
        match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
        return int(match.group(1)) if match else 0

    def cpu_seconds(self) -> float:
        """User + system CPU time the process used so far (0 once reaped)."""
        return cpu_seconds(self.pid) if self.proc is not None else 0.0

    def kill(self) -> None:
        """SIGKILL (a crash); safe to call twice."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self in _LIVE:
            _LIVE.remove(self)

    def terminate(self, timeout: float = 40.0) -> int:
        """SIGTERM and wait; SIGKILL after ``timeout``. The exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc.wait()
        if self in _LIVE:
            _LIVE.remove(self)
        return self.proc.returncode


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    """The 1-minute load average: other work on the machine skews the figures."""
    return f"{os.getloadavg()[0]:.2f}"


class PySpy:
    """py-spy sampling a process into a raw (collapsed stacks) file, if py-spy is installed."""

    def __init__(self, pid: int, out: Path, rate: int = 200) -> None:
        self.out = out
        self.proc = None
        binary = shutil.which("py-spy")
        if binary is None:
            print("py-spy not installed (pip install py-spy); not profiling", flush=True)
            return
        self.proc = subprocess.Popen([binary, "record", "--pid", str(pid), "-r", str(rate),
                                      "--format", "raw", "--gil", "-o", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Db:
    """Read-only queries on mailbot's SQLite file while the daemon writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is None:
            if not self.path.exists():
                return None
            try:
                self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
            except sqlite3.Error:
                return None
        return self._conn

    def scalar(self, sql: str, params: tuple = (), default: int = 0):
        conn = self._connect()
        if conn is None:
            return default
        try:
            row = conn.execute(sql, params).fetchone()
        except sqlite3.Error:  # not migrated yet, or the WAL index is being rebuilt
            self.close()
            return default
        return row[0] if row and row[0] is not None else default

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = self._connect()
        if conn is None:
            return []
        return conn.execute(sql, params).fetchall()

    def tickets(self) -> int:
        return self.scalar("SELECT COUNT(*) FROM tickets")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def write_config(path: Path, data_dir: Path, *, listener_port: int | None = None,
                 imap: dict | list[dict] | None = None, relay_port: int | None = None,
                 log_level: str = "INFO", protocol: str = "smtp", extra: str = "") -> Path:
    """A mailbot.toml for one benchmark run (web server off, everything on loopback);
    ``extra`` is appended as it is (more tables)."""
    lines = [
        "[service]", f'data_dir = "{data_dir}"', f'log_level = "{log_level}"', "",
        "[support]", 'address = "support@example.com"',
        'signing_secret = "bench-secret-bench-secret-bench-secret"', "",
        "[listener]",
        f"enabled = {'true' if listener_port else 'false'}",
        'host = "127.0.0.1"', f"port = {listener_port or 2525}", f'protocol = "{protocol}"', "",
        "[web]", "enabled = false", "",
        "[admin]", "enabled = false", "",
    ]
    for mailbox in [imap] if isinstance(imap, dict) else imap or []:
        lines += ["[[imap]]"]
        for key, value in mailbox.items():
            rendered = f'"{value}"' if isinstance(value, str) else \
                str(value).lower() if isinstance(value, bool) else str(value)
            lines.append(f"{key} = {rendered}")
        lines.append("")
    if relay_port:
        lines += ["[relay]", 'host = "127.0.0.1"', f"port = {relay_port}",
                  'security = "plain"', "timeout_seconds = 10", ""]
    path.write_text("\n".join(lines) + extra, encoding="utf-8")
    return path


def imap_settings(dovecot: Dovecot, user: str, **overrides) -> dict:
    """The [[imap]] table for a Dovecot user: plain on loopback, done folder, batches of 100."""
    account = dovecot.account(user)
    settings = {"name": "bench", "host": account.host, "port": account.port,
                "security": "plain", "username": account.username,
                "password": account.password, "folder": "INBOX",
                "done_folder": "Processed", "idle": True, "batch_size": 100}
    settings.update(overrides)
    return settings


def listening(port: int) -> bool:
    """Whether something accepts connections on the port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100); nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def table(rows: list[tuple], header: tuple) -> str:
    """A plain fixed-width table."""
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = []
    for index, row in enumerate(cells):
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths, strict=False))))
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def clean_up(daemons: list, sink, dovecot, tmp: Path, keep: bool) -> None:
    """Kill the daemons, stop the sink and Dovecot, and remove (or keep) the temp dir."""
    for daemon in daemons:
        daemon.kill()
    if sink is not None:
        sink.stop()
    if dovecot is not None:
        dovecot.close()
    if keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
