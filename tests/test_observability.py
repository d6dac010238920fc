"""What an operator observes of mail coming in (issue 15, point 7): at /metrics, mails by
the source they came from and what became of them, and how long a mail takes from its
source handing it over to its commit."""

from __future__ import annotations

import smtplib
import time
import urllib.request
from datetime import UTC, datetime

from daemon_util import Instance
from mails import build_mail
from prometheus_client.parser import text_string_to_metric_families
from servers import LOOPBACK, free_port, wait_until

from mailbot.status.metrics import OUTCOMES
from mailbot.tickets.outcome import Outcome

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
BY_SOURCE = "mailbot_mails_by_source_total"
LATENCY = "mailbot_ingest_latency_seconds"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """The samples of a Prometheus exposition: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def by_source(found: dict) -> dict[tuple[str, str], float]:
    """The mails-by-source counter: (source, outcome) -> count."""
    return {(dict(labels)["source"], dict(labels)["outcome"]): value
            for (name, labels), value in found.items() if name == BY_SOURCE}


def latency(found: dict, suffix: str, le: str = "") -> float:
    """A sample of the ingest latency histogram (``_count``, ``_sum`` or a ``_bucket``)."""
    labels = (("le", le),) if le else ()
    return found[(f"{LATENCY}{suffix}", labels)]


def test_mails_are_counted_by_source_and_outcome_with_their_ingest_latency(make_desk):
    """Each mail source on the health board shows every outcome from the start (the relay
    and the loops do not); a mail counts under its source and outcome, and its seconds from
    handover to commit land in the histogram.  A caller that names no source still counts
    the outcome."""
    ctx = make_desk(NOW).ctx
    ctx.health.watch("imap:support", 60)
    ctx.health.set("smtp:127.0.0.1:2525", "connected")
    ctx.health.set("relay:maildir", "connected")
    ctx.health.set("outbox", "running")
    fresh = samples(ctx.metrics.render().decode())
    assert by_source(fresh) == {(source, outcome): 0.0 for source in ("imap:support", "smtp")
                                for outcome in OUTCOMES}
    assert latency(fresh, "_count") == 0.0

    handed_over = time.monotonic() - 60  # a minute ago: no bucket below it can count them
    ctx.metrics.ingested(Outcome("created", "202611240001"), "imap:support", handed_over)
    ctx.metrics.ingested(Outcome("quarantined"), "smtp", handed_over)
    ctx.metrics.ingested(Outcome("note", "202611240001"))
    found = samples(ctx.metrics.render().decode())
    counted = {key: value for key, value in by_source(found).items() if value}
    assert counted == {("imap:support", "created"): 1.0, ("smtp", "quarantined"): 1.0}
    assert found[("mailbot_mails_ingested_total", (("outcome", "note"),))] == 1.0
    assert latency(found, "_count") == 2.0
    assert [latency(found, "_bucket", le) for le in ("30.0", "+Inf")] == [0.0, 2.0]


def test_a_daemon_counts_a_mail_by_its_source_and_times_it(tmp_path):
    """A mail over SMTP to a running daemon: /metrics counts it under "smtp" as created,
    and the ingest latency histogram has it."""
    instance = Instance(tmp_path)
    instance.settings["admin"] = {"enabled": True, "host": LOOPBACK, "port": free_port()}
    instance.write()
    admin = instance.settings["admin"]

    def scraped() -> dict:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{admin['port']}/metrics",
                                    timeout=10) as answer:
            return samples(answer.read().decode())

    with instance.start() as daemon:
        daemon.wait_log("mailbot running")
        with smtplib.SMTP(*instance.listener, timeout=10) as client:
            client.sendmail("kunde@kunde.example", ["support@example.com"], build_mail())
        created = ("mailbot_mails_ingested_total", (("outcome", "created"),))
        found = wait_until(lambda: (lambda s: s if s[created] == 1.0 else None)(scraped()),
                           timeout=10, message="the mail was filed")
    assert by_source(found)[("smtp", "created")] == 1.0
    assert latency(found, "_count") == 1.0
