"""Three mailbot nodes on one PostgreSQL, one IMAP mailbox and a listener each (issue 18):
3,000 mails, the node working the mailbox killed with SIGKILL mid-run, and still every mail
is one ticket, none is filed twice, and at most one acknowledgement goes out twice.

The nodes are real daemons with data directories of their own (nothing node-local is
shared); the mail comes as a sender's MTA and a mailbox would bring it: half appended to
the IMAP mailbox all three watch, half over SMTP to the nodes in turn, a refused or broken
connection retried at the next node.
"""

from __future__ import annotations

import smtplib
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from daemon_util import DaemonProcess, Instance
from mails import build_mail
from servers import wait_until

from mailbot.app.watchdog import read_status

MAILS = 3000  # as issue 18 names them: half by IMAP, half by SMTP
IMAP_SOURCE = "imap:support"


def _mail(n: int) -> bytes:
    """Mail ``n``: its own sender (no acknowledgement is rate-limited) and Message-ID."""
    return build_mail(subject=f"Fall {n}", sender=(f"Kunde {n}", f"kunde{n}@example.org"),
                      message_id=f"m{n}@example.org", text=f"Hallo, Fall {n}.\n")


def _node(root, url, imap_user, sink) -> Instance:
    root.mkdir()
    instance = Instance.for_servers(root, imap=imap_user, sink=sink)
    instance.settings["store"] = {"url": url}
    instance.settings["outbox"] = {"backoff_seconds": 0.2, "max_backoff_seconds": 1}
    instance.write()
    return instance


def _mailbox_state(node: Instance) -> str:
    """What this node's daemon says of the IMAP mailbox: "connected" while it works it,
    "standby" while another node does ("" before its first report)."""
    status = read_status(node.root / "data")
    return next((s["state"] for s in status["sources"] if s["name"] == IMAP_SOURCE), "")


def _accepts(listener: tuple[str, int]) -> bool:
    """Whether a node's listener takes connections."""
    try:
        with socket.create_connection(listener, timeout=1):
            return True
    except OSError:
        return False


class Sender:
    """An MTA's view: each mail to the next node, retried at the next one until accepted."""

    def __init__(self, nodes: list[Instance]) -> None:
        self.listeners = [n.listener for n in nodes]
        self.turn = 0
        self.lock = threading.Lock()
        self.retries = 0

    def send(self, n: int) -> None:
        """Deliver mail ``n`` to some node; a refusal or a dead node is tried elsewhere."""
        raw = _mail(n)
        for attempt in range(60):
            with self.lock:
                host, port = self.listeners[self.turn % len(self.listeners)]
                self.turn += 1
            try:
                with smtplib.SMTP(host, port, timeout=30) as client:
                    client.sendmail(f"kunde{n}@example.org", ["support@example.com"], raw)
                return
            except (OSError, smtplib.SMTPException):
                with self.lock:
                    self.retries += 1
                if attempt % len(self.listeners) == len(self.listeners) - 1:
                    wait_until(lambda: any(_accepts(at) for at in self.listeners), timeout=30,
                               message="a node that accepts connections")
        raise AssertionError(f"mail {n} accepted by no node")


@pytest.mark.timeout(600)
def test_three_nodes_file_3000_mails_once_while_the_mailbox_worker_is_killed(
        tmp_path, pg, dovecot, imap_user, smtp_sink):
    """One kill of the node that works the mailbox: another takes the mailbox over and
    files the rest; every mail is exactly one ticket, and acknowledgements go out once (at
    most one twice: the one the killed node sent but could not mark sent)."""
    url = pg.new_database()
    nodes = [_node(tmp_path / f"node{i}", url, imap_user, smtp_sink) for i in range(3)]
    by_imap = range(0, MAILS, 2)
    dovecot.append_many(imap_user.username, "INBOX", (_mail(n) for n in by_imap))
    daemons: list[DaemonProcess | None] = [node.start() for node in nodes]
    try:
        states = wait_until(
            lambda: (found := [_mailbox_state(n) for n in nodes]) and
            sorted(found) == ["connected", "standby", "standby"] and found,
            timeout=60, message="one node works the mailbox, two stand by")
        holder = [states.index("connected")]
        sender = Sender(nodes)
        with ThreadPoolExecutor(6) as clients:
            sent = clients.map(sender.send, range(1, MAILS, 2))
            imap_filed = wait_until(
                lambda: nodes[0].count("ingest", f"source = '{IMAP_SOURCE}'") >= MAILS // 6
                and nodes[0].count("ingest", f"source = '{IMAP_SOURCE}'"),
                timeout=120, message="a third of the IMAP mails filed")
            killed_at = time.monotonic()
            daemons[holder[0]].kill()
            daemons[holder[0]] = None
            wait_until(lambda: nodes[0].count("ingest", f"source = '{IMAP_SOURCE}'")
                       > imap_filed, timeout=120, message="another node files the mailbox")
            print(f"\nnode {holder[0]} killed after {imap_filed} IMAP mails: another node "
                  f"filed the mailbox {time.monotonic() - killed_at:.1f} s later")
            list(sent)
        wait_until(lambda: nodes[0].count("tickets") >= MAILS, timeout=300,
                   message=f"{MAILS} tickets")
        wait_until(lambda: len(smtp_sink.messages) >= MAILS, timeout=300, interval=0.2,
                   message=f"{MAILS} acknowledgements")
        print(f"{MAILS} mails on 3 nodes; {sender.retries} SMTP deliveries retried at "
              "another node")
        assert nodes[0].count("tickets") == MAILS
        twice = nodes[0].query("SELECT message_id FROM messages GROUP BY message_id "
                               "HAVING COUNT(DISTINCT ticket_id) > 1")
        assert twice == []
        acks = Counter(m.message["In-Reply-To"] for m in smtp_sink.messages)
        assert len(acks) == MAILS
        assert sum(acks.values()) - MAILS <= 1, [k for k, v in acks.items() if v > 1]
    finally:
        for daemon in daemons:
            if daemon is not None:
                daemon.stop()
