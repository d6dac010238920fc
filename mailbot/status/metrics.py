"""Prometheus metrics for operators, in a registry of their own (never the global one).

Counters are fed by the pipeline (:meth:`Metrics.ingested`: outcomes, by source too, and
the ingest latency) and the outbox sender (:meth:`Metrics.sent`); outbox and source gauges
are read at scrape time from the store and the :class:`~mailbot.health.Health` board, so
they are never stale.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mailbot.status.health import STANDBY, WORKING, Health
from mailbot.store import Store
from mailbot.store import inbound as iq
from mailbot.store import outbox as oq
from mailbot.store import spam as sq

OUTCOMES = ("created", "followup", "duplicate", "note", "ignored", "quarantined", "spam")
OUTBOX_GAUGED = ("pending", "failed")
LATENCY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)
# Seconds from a source handing a mail over to its commit: milliseconds for most mails, up
# to [limits] max_seconds_per_mail for one the reader process is ended on.
INGEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ScrapeTimeCollector:
    """Outbox and source gauges, computed when Prometheus scrapes."""

    def __init__(self, store: Store, health: Health) -> None:
        self.store = store
        self.health = health

    def describe(self) -> list:
        """No description up front: collecting would touch the store at registration."""
        return []

    def collect(self):
        """Yield the current outbox counts, held spam and source connection states."""
        yield self._outbox()
        yield GaugeMetricFamily("mailbot_spam_held", "Mails held as spam, waiting for release "
                                "or expiry", value=sq.count(self.store))
        yield GaugeMetricFamily("mailbot_quarantine_mails", "Mails held in the quarantine, "
                                "waiting for an operator", value=iq.quarantine_count(self.store))
        oldest = oq.oldest_pending_at(self.store)
        age = (datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds() if oldest \
            else 0.0
        yield GaugeMetricFamily("mailbot_outbox_oldest_pending_seconds", "Age of the oldest "
                                "mail still waiting for delivery (0 when none waits)",
                                value=max(0.0, age))
        yield from self._sources()

    def _outbox(self) -> GaugeMetricFamily:
        gauge = GaugeMetricFamily("mailbot_outbox_mails", "Outbox mails by delivery status",
                                  labels=["status"])
        counts = oq.outbox_counts(self.store)
        for status in OUTBOX_GAUGED:
            gauge.add_metric([status], counts.get(status, 0))
        return gauge

    def _sources(self):
        now = time.monotonic()
        up = GaugeMetricFamily("mailbot_source_connected",
                               "1 when the source or loop is working and not stuck, else 0",
                               labels=["source"])
        failures = GaugeMetricFamily("mailbot_source_failures",
                                     "Consecutive failures of the source or loop",
                                     labels=["source"])
        success = GaugeMetricFamily("mailbot_source_last_success_timestamp_seconds",
                                    "When the source last connected or handled a mail",
                                    labels=["source"])
        mails = CounterMetricFamily("mailbot_source_mails", "Mails the source handed over",
                                    labels=["source"])
        standby = GaugeMetricFamily("mailbot_source_standby",
                                    "1 when another node works the source (this one waits "
                                    "to take over), else 0", labels=["source"])
        for state in self.health.states():
            working = state.state in WORKING and not state.stuck(now)
            up.add_metric([state.name], 1 if working else 0)
            failures.add_metric([state.name], state.failures)
            success.add_metric([state.name], state.last_success or 0)
            mails.add_metric([state.name], state.handled)
            standby.add_metric([state.name], 1 if state.state == STANDBY else 0)
        yield from (up, failures, success, mails, standby)


class Metrics:
    """mailbot's metrics; pass one to the context as ``ctx.metrics``."""

    def __init__(self, store: Store, health: Health | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.ingested_total = Counter("mailbot_mails_ingested", "Mails processed, by outcome",
                                      ["outcome"], registry=self.registry)
        self.quarantined_total = Counter("mailbot_mails_quarantined",
                                         "Mails that could not be processed",
                                         registry=self.registry)
        self.tickets_created_total = Counter("mailbot_tickets_created", "Tickets opened",
                                             registry=self.registry)
        self.ack_latency = Histogram(
            "mailbot_acknowledgement_latency_seconds",
            "Seconds from filing a new ticket to handing its acknowledgement to the relay",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.by_source_total = Counter("mailbot_mails_by_source",
                                       "Mails processed, by the source they came from and "
                                       "their outcome", ["source", "outcome"],
                                       registry=self.registry)
        self.ingest_latency = Histogram(
            "mailbot_ingest_latency_seconds",
            "Seconds from the source handing a mail over to its commit",
            buckets=INGEST_BUCKETS, registry=self.registry)
        for outcome in OUTCOMES:
            self.ingested_total.labels(outcome)
        self.health = health or Health()
        self._sources: set[str] = set()
        self.registry.register(ScrapeTimeCollector(store, self.health))

    def ingested(self, outcome, source: str = "", started: float | None = None) -> None:
        """Count one processed mail by its outcome (called by the pipeline once it is
        committed or quarantined); with its ``source`` ("smtp", "imap:support") by source
        too, and with ``started``, the :func:`time.monotonic` of the source handing it
        over, its ingest latency."""
        self.ingested_total.labels(outcome.status).inc()
        if outcome.status == "quarantined":
            self.quarantined_total.inc()
        elif outcome.status == "created":
            self.tickets_created_total.inc()
        if source:
            self._expect(source)
            self.by_source_total.labels(source, outcome.status).inc()
        if started is not None:
            self.ingest_latency.observe(max(0.0, time.monotonic() - started))

    def sent(self, row: dict, sent_at: datetime) -> None:
        """Observe the acknowledgement latency of a delivered outbox row (called by the sender)."""
        if row["kind"] != "acknowledgement" or not row.get("created_at"):
            return
        latency = sent_at - datetime.fromisoformat(row["created_at"])
        self.ack_latency.observe(max(0.0, latency.total_seconds()))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (reads the store).

        Every mail source on the health board shows every outcome, at 0 until it happens,
        so a rate over it is defined from the start.
        """
        for state in self.health.states():
            source = mail_source(state.name)
            if source:
                self._expect(source)
        return generate_latest(self.registry)

    def _expect(self, source: str) -> None:
        """Give ``source`` a series for each outcome (once)."""
        if source in self._sources:
            return
        for outcome in OUTCOMES:
            self.by_source_total.labels(source, outcome)
        self._sources.add(source)


def mail_source(name: str) -> str:
    """The name the pipeline gives the mails of the health board's entry ``name``, or ""
    for a loop or the relay: a mailbox ("imap:support") hands its mails over under its own
    name, the listener ("smtp:127.0.0.1:2525") under its protocol ("smtp", "lmtp")."""
    kind, _, where = name.partition(":")
    if kind == "imap" and where:
        return name
    return kind if kind in ("smtp", "lmtp") and where else ""
