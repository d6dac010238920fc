"""Stopping and long lines: SIGTERM at any moment is a clean stop; long lines are accepted.

Real daemon processes and raw SMTP sessions.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

from daemon_util import Instance, process_env
from mails import build_mail
from servers import wait_until


def read_reply(sock: socket.socket) -> str:
    """One (possibly multi-line) SMTP reply."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data.decode()
        data += chunk
        lines = data.decode().split("\r\n")
        if len(lines) > 1 and len(lines[-2]) >= 4 and lines[-2][3] == " ":
            return data.decode()


def command(sock: socket.socket, line: str) -> str:
    """Send one SMTP command, return the reply."""
    sock.sendall(line.encode() + b"\r\n")
    return read_reply(sock)


def open_transaction(listener: tuple[str, int]) -> socket.socket:
    """A session that has said DATA and got 354: the client is sending the mail."""
    sock = socket.create_connection(listener, timeout=20)
    assert read_reply(sock).startswith("220")
    assert command(sock, "EHLO client.example").startswith("250")
    assert command(sock, "MAIL FROM:<kunde@example.org>").startswith("250")
    assert command(sock, "RCPT TO:<support@example.com>").startswith("250")
    assert command(sock, "DATA").startswith("354")
    return sock


def send_mail(listener: tuple[str, int], raw: bytes) -> str:
    """A whole SMTP transaction; the reply to the end of DATA."""
    with open_transaction(listener) as sock:
        sock.sendall(raw.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n")
        return read_reply(sock)


def test_sigterm_mid_data_answers_421_and_keeps_what_was_accepted(tmp_path):
    """A client in the middle of a transaction gets 421 4.3.2 (its MTA retries later), the
    mail answered 250 before is filed, and the daemon exits 0."""
    bot = Instance(tmp_path)
    daemon = bot.start()
    assert send_mail(daemon.listener, build_mail(subject="Vorher")).startswith("250")
    sock = open_transaction(daemon.listener)
    sock.sendall(b"Subject: Halb\r\n\r\nDer Anfang einer Mail")
    daemon.process.send_signal(signal.SIGTERM)
    assert read_reply(sock).startswith("421 4.3.2")
    sock.close()
    assert daemon.process.wait(10) == 0, daemon.log()
    assert [t["subject"] for t in bot.tickets()] == ["Vorher"]


def caught_signals(pid: int) -> int:
    """The bit mask of signals the process has a handler for (from /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("SigCgt:")), 16)


def test_sigterm_while_starting_is_a_clean_stop(tmp_path):
    """SIGTERM as early as the process can catch it (still importing, opening the database)
    stops it with exit 0."""
    bot = Instance(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "mailbot", "--config", str(bot.config_path), "run"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=process_env())
    term = 1 << (signal.SIGTERM - 1)
    wait_until(lambda: caught_signals(process.pid) & term, 10, 0.001, "SIGTERM handler")
    database = Path(bot.settings["service"]["data_dir"]) / "mailbot.sqlite3"
    assert not database.exists()  # caught before the daemon even opened its database
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=10)[0].decode()
    assert process.returncode == 0, output
    assert "mailbot running" not in output or "mailbot stopped" in output


def test_lines_longer_than_1000_bytes_are_accepted(tmp_path):
    """Real mail has lines longer than RFC 5321's 1,000 bytes: up to [listener]
    max_line_bytes they are filed intact; longer ones are refused with the reason."""
    bot = Instance(tmp_path)
    long_line = "x" * 5000
    with bot.start() as daemon:
        reply = send_mail(daemon.listener, build_mail(subject="Lang", text=long_line + "\n",
                                                      transfer="8bit"))
        assert reply.startswith("250"), reply
        refused = send_mail(daemon.listener, build_mail(subject="Zu lang",
                                                        text="y" * 20_000 + "\n",
                                                        transfer="8bit"))
        assert refused.startswith("500"), refused
    [ticket] = bot.tickets()
    body = bot.query("SELECT body FROM messages")[0]["body"]
    assert ticket["subject"] == "Lang" and long_line in body
