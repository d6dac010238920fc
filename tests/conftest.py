"""Shared fixtures: a real Dovecot IMAP server and a real SMTP sink on 127.0.0.1.

The servers themselves live in `tests/servers.py`; keep this file to thin fixtures.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage

import pytest
from daemon_util import Instance, rows_read
from pg import PgServer, bindir
from postfix import PostfixRig, postfix_missing
from servers import Dovecot, ImapAccount, SmtpSink

from mailbot.context import Context, open_context
from mailbot.inbound import pipeline
from mailbot.settings.config import load
from mailbot.store import tickets as tq
from mailbot.tickets.outcome import Outcome


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """One Dovecot for the whole session, with the user "support" / "secret"."""
    server = Dovecot()
    try:
        server.add_user("support", "secret")
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def imap_user(dovecot: Dovecot) -> ImapAccount:
    """A fresh IMAP user (u1, u2, ...) so no test sees another test's mail."""
    if not dovecot.running:  # a test stopped or crashed the shared server
        dovecot.start()
    return dovecot.new_user()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A fresh SMTP sink for this test, stopped at teardown."""
    sink = SmtpSink()
    try:
        sink.start()
        yield sink
    finally:
        sink.stop()


# -- the store's engines: SQLite, and a PostgreSQL server of this session -------------------

@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """One PostgreSQL server for the session (per xdist worker), in a temp dir of its own."""
    binaries = bindir()
    if binaries is None:
        pytest.fail("PostgreSQL server not installed: "
                    "apt-get install -y --no-install-recommends postgresql (tests/run.sh)")
    server = PgServer(binaries)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def store_engine() -> str:
    """The store engine of a test: SQLite, unless the test is marked ``both_stores`` (then
    it runs once per engine, see :func:`pytest_generate_tests`)."""
    return "sqlite"


# Modules whose every test that uses the store engine (make_desk, store_url) runs on both.
# Tests that run daemons or servers choose their engine themselves (test_blobs,
# test_cluster, test_cluster_leases, test_store_engines); the rest run on SQLite only, to
# keep the suite within its time budget.
BOTH_STORES = frozenset({
    "test_agent_auth", "test_check_config", "test_claims", "test_commands", "test_damage",
    "test_directory_cli", "test_followup_facts", "test_groups", "test_jobs", "test_lifecycle",
    "test_observability", "test_policy_e2e", "test_privacy",
    "test_reading", "test_wording", "test_wording_mails",
})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_stores``, or in a module of :data:`BOTH_STORES`, that use the
    store engine run once on SQLite and once on PostgreSQL."""
    if "store_engine" in metafunc.fixturenames and (
            metafunc.module.__name__ in BOTH_STORES
            or metafunc.definition.get_closest_marker("both_stores")):
        metafunc.parametrize("store_engine", ["sqlite", "postgresql"])


@pytest.fixture
def store_url(store_engine: str, request: pytest.FixtureRequest) -> str:
    """The ``[store] url`` of a test's mailbot: "" (SQLite in its data_dir) or a fresh
    PostgreSQL database at the current schema."""
    if store_engine == "sqlite":
        return ""
    return request.getfixturevalue("pg").new_database()


# -- an in-process mailbot with a settable clock (ticket, lifecycle and scheduler tests) -------

AGENTS = ({"address": "anna@example.com", "name": "Anna Agent"},
          {"address": "ben@example.com", "name": "Ben Agent"})


class Desk:
    """mailbot in this process on its own data directory; ``desk.now`` is its clock."""

    def __init__(self, instance: Instance, now: datetime) -> None:
        self.instance = instance
        self.now = now
        self.ctx = open_context(load(instance.config_path), clock=lambda: self.now)

    def receive(self, raw: bytes) -> Outcome:
        """File one raw mail as the sources do."""
        return pipeline.ingest(self.ctx, raw, "test")

    def run(self, job: Callable[[Context, datetime], int]) -> int:
        """Run one scheduler job at the desk's current time."""
        return job(self.ctx, self.now)

    def ticket(self, number: str) -> dict:
        """The ticket's current row."""
        return tq.by_number(self.ctx.store, number)

    def events(self, number: str, kind: str) -> list[dict]:
        """The ticket's events of one kind, in order."""
        return [e for e in tq.events(self.ctx.store, self.ticket(number)["id"])
                if e["kind"] == kind]

    def outbox(self, kind: str = "", to: str = "") -> list[EmailMessage]:
        """Queued mails (optionally of one kind, to one address), parsed, in order."""
        rows = self.ctx.store.rows("SELECT kind, recipients, raw FROM outbox ORDER BY id")
        return [message_from_bytes(r["raw"], policy=email_policy.default) for r in rows
                if kind in ("", r["kind"]) and (not to or to in json.loads(r["recipients"]))]

    def reply_address(self, number: str, agent: str = AGENTS[0]["address"]) -> str:
        """The address ``agent`` answers ticket ``number`` through, signed today."""
        return self.ctx.composer.reply_address(number, agent, self.now)

    def rows_read(self, work: Callable[[], object]) -> int:
        """How many rows ``work()`` reads from the desk's database: what a scheduled round
        costs in memory and time, whatever the clock says."""
        return rows_read(self.ctx.store, work)


@pytest.fixture
def make_desk(tmp_path, store_engine, request) -> Iterator[Callable[..., Desk]]:
    """``make_desk(now, section={key: value}, ...)``: a Desk with two agents, Anna and Ben
    (each on a database of its own: PostgreSQL for tests marked ``both_stores``)."""
    desks: list[Desk] = []

    def make(now: datetime, **sections: dict) -> Desk:
        root = tmp_path / f"desk{len(desks)}"
        root.mkdir()
        instance = Instance(root)
        instance.settings["listener"]["enabled"] = False
        if store_engine == "postgresql":
            instance.settings["store"] = {"url": request.getfixturevalue("pg").new_database()}
        instance.settings["team.agents"] = list(AGENTS)
        for name, values in sections.items():
            instance.settings.setdefault(name, {}).update(values)
        instance.write()
        desks.append(Desk(instance, now))
        return desks[-1]

    yield make
    for desk in desks:
        desk.ctx.store.close()


@pytest.fixture(scope="module")
def postfix_rig() -> Iterator[PostfixRig]:
    """A Postfix of this module (own temp dir and ports) in front of three mailbot daemons,
    one per way in (LMTP, SMTP, pipe), relaying their mail on to a sink; skips without Postfix."""
    reason = postfix_missing()
    if reason:  # tests/run.sh installs Postfix: its absence is a failure, not a skip
        pytest.fail(reason)
    rig = PostfixRig()
    try:
        rig.start()
        yield rig
    finally:
        rig.stop()
