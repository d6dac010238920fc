"""A batch filed in groups (one transaction each, one savepoint per mail): every mail has
the outcome it would have had alone, one that fails fails alone, a fault of ours stops the
batch after the mails before it, and reads never wait for a group being filed."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from conftest import AGENTS
from mails import build_mail, slow_mail

from mailbot.inbound import pipeline
from mailbot.inbound.source import TemporaryFailure
from mailbot.settings.config import load
from mailbot.tickets import filing

NOW = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)  # a Tuesday, in business hours
# The quarantine reason of a mail whose reader ran out of the configured budget (1 s).
OVER_BUDGET = "reading this mail took longer than 1 s (limits.max_seconds_per_mail)"


def _mail(subject: str, sender: str, **kwargs) -> bytes:
    return build_mail(subject=subject, sender=(sender.split("@")[0].title(), sender),
                      **kwargs)


def _subjects(desk) -> list[str]:
    return [row["subject"] for row in desk.ctx.store.rows(
        "SELECT subject FROM tickets ORDER BY id")]


def test_outcomes_come_in_order_and_threads_cross_groups(make_desk, monkeypatch):
    monkeypatch.setattr(pipeline, "GROUP_MAILS", 2)
    desk = make_desk(NOW)
    first = _mail("Drucker", "anna@kunde.example", message_id="<first@kunde.example>")
    batch = [first, _mail("Scanner", "bernd@kunde.example"), first,
             b"no header block, no mail\n",
             _mail("Re: Drucker", "anna@kunde.example", in_reply_to="<first@kunde.example>",
                   text="Er druckt immer noch nicht.\n")]

    outcomes = list(pipeline.ingest_all(desk.ctx, [(raw, None) for raw in batch], "test"))

    assert [o.status for o in outcomes] == ["created", "created", "duplicate", "quarantined",
                                            "followup"]
    number = outcomes[0].ticket_number
    assert outcomes[2].ticket_number == number and outcomes[2].detail == "same bytes"
    assert outcomes[4].ticket_number == number
    assert _subjects(desk) == ["Drucker", "Scanner"]
    assert len(desk.outbox(kind="acknowledgement")) == 2
    # The copy never replaces the record of the mail that was filed.
    [record] = desk.ctx.store.rows("SELECT outcome FROM ingest WHERE sha256 = ?",
                                   (pipeline.hashlib.sha256(first).hexdigest(),))
    assert record["outcome"] == "created"
    [held] = desk.ctx.store.rows("SELECT status FROM quarantine")
    assert held["status"] == "held"


@pytest.mark.parametrize("settings", [{"service": {"reading_processes": 0}},
                                      {"limits": {"max_seconds_per_mail": 0}}],
                         ids=["no-warm-readers", "read-in-process"])
def test_a_batch_is_filed_without_warm_readers_and_without_readers(make_desk, monkeypatch,
                                                                   settings):
    monkeypatch.setattr(pipeline, "GROUP_MAILS", 2)
    desk = make_desk(NOW, **settings)
    batch = [_mail(f"Frage {n}", f"kunde{n}@kunde.example") for n in range(5)]

    outcomes = list(pipeline.ingest_all(desk.ctx, [(raw, None) for raw in batch], "test"))

    assert [o.status for o in outcomes] == ["created"] * 5
    assert _subjects(desk) == [f"Frage {n}" for n in range(5)]


def test_a_mail_that_fails_is_quarantined_alone_and_leaves_nothing(make_desk, monkeypatch):
    monkeypatch.setattr(pipeline, "GROUP_MAILS", 3)
    desk = make_desk(NOW)
    real = filing.file_customer_mail

    def failing(ctx, msg, *args):
        outcome = real(ctx, msg, *args)  # the ticket and its acknowledgement are written...
        if msg.subject == "Kaputt":
            raise RuntimeError("a fault in filing")  # ...and must be undone
        return outcome

    monkeypatch.setattr(filing, "file_customer_mail", failing)
    batch = [_mail("Eins", "anna@kunde.example"), _mail("Kaputt", "carl@kunde.example"),
             _mail("Drei", "dora@kunde.example")]

    outcomes = list(pipeline.ingest_all(desk.ctx, [(raw, None) for raw in batch], "test"))

    assert [o.status for o in outcomes] == ["created", "quarantined", "created"]
    assert _subjects(desk) == ["Eins", "Drei"]
    assert not desk.outbox(to="carl@kunde.example")
    assert len(desk.outbox(kind="acknowledgement")) == 2
    [held] = desk.ctx.store.rows("SELECT error FROM quarantine")
    assert "Kaputt" not in held["error"]  # a sentence for people, no exception text
    assert "a fault in filing" not in held["error"]


def test_a_fault_of_ours_stops_the_batch_after_the_mails_before_it(make_desk, monkeypatch):
    monkeypatch.setattr(pipeline, "GROUP_MAILS", 2)
    # Read in this process, so that the broken disk below is the readers' too.
    desk = make_desk(NOW, limits={"max_seconds_per_mail": 0})
    batch = [_mail(f"Frage {n}", f"kunde{n}@kunde.example") for n in range(5)]
    broken = pipeline.hashlib.sha256(batch[3]).hexdigest()
    real_put = desk.ctx.spool.put

    def put(data, sha, sync=True):
        if sha == broken:
            raise OSError(28, "No space left on device")
        return real_put(data, sha, sync=sync)

    monkeypatch.setattr(desk.ctx.spool, "put", put)
    seen = []
    with pytest.raises(TemporaryFailure, match="spool"):
        for outcome in pipeline.ingest_all(desk.ctx, [(raw, None) for raw in batch], "test"):
            seen.append(outcome.status)
    assert seen == ["created"] * 3
    assert _subjects(desk) == ["Frage 0", "Frage 1", "Frage 2"]
    assert not desk.ctx.store.rows("SELECT id FROM quarantine")

    monkeypatch.setattr(desk.ctx.spool, "put", real_put)  # the disk has room again
    again = list(pipeline.ingest_all(desk.ctx, [(raw, None) for raw in batch], "test"))
    assert [o.status for o in again] == ["duplicate"] * 3 + ["created"] * 2
    assert _subjects(desk) == [f"Frage {n}" for n in range(5)]


def test_a_mail_read_while_a_group_is_filed_runs_out_of_time_alone(make_desk, monkeypatch):
    """The third mail is read (in the second group) while the first group is filed; its
    reader is ended at the budget, it alone is quarantined, the mail after it is filed."""
    monkeypatch.setattr(pipeline, "GROUP_MAILS", 2)
    desk = make_desk(NOW, limits={"max_seconds_per_mail": 1, "max_parameters": 10_000_000,
                                  "max_header_bytes": 100_000_000})
    batch = [_mail("Eins", "anna@kunde.example"), _mail("Zwei", "bernd@kunde.example"),
             slow_mail(), _mail("Vier", "dora@kunde.example")]

    outcomes = list(pipeline.ingest_all(desk.ctx, [(raw, None) for raw in batch], "test"))

    assert [o.status for o in outcomes] == ["created", "created", "quarantined", "created"]
    # stopped by its budget, the configured one
    assert outcomes[2].detail == OVER_BUDGET
    assert _subjects(desk) == ["Eins", "Zwei", "Vier"]
    [held] = desk.ctx.store.rows("SELECT sha256 FROM quarantine")
    assert desk.ctx.spool.get(held["sha256"]) == batch[2]  # kept, for a retry


def test_an_error_of_the_arrivals_comes_after_the_mails_before_it(make_desk):
    desk = make_desk(NOW)

    def arrivals():
        yield _mail("Vorher", "anna@kunde.example"), None
        raise PermissionError("cannot read the next file")

    seen = []
    with pytest.raises(PermissionError):
        for outcome in pipeline.ingest_all(desk.ctx, arrivals(), "test"):
            seen.append(outcome.status)
    assert seen == ["created"]
    assert _subjects(desk) == ["Vorher"]


def test_nothing_more_is_taken_once_stopped(make_desk, monkeypatch):
    monkeypatch.setattr(pipeline, "GROUP_MAILS", 1)
    desk = make_desk(NOW)
    stopping = threading.Event()
    batch = [_mail(f"Frage {n}", f"kunde{n}@kunde.example") for n in range(4)]
    taken = []

    def arrivals():
        for n, raw in enumerate(batch):
            taken.append(n)
            if n == 2:
                stopping.set()  # the stop comes while mail 2 is taken: it is filed
            yield raw, None

    outcomes = list(pipeline.ingest_all(desk.ctx, arrivals(), "test", stopping.is_set))
    assert taken == [0, 1, 2]
    assert [o.status for o in outcomes] == ["created"] * 3
    assert _subjects(desk) == ["Frage 0", "Frage 1", "Frage 2"]


def test_a_read_does_not_wait_for_a_transaction_and_sees_what_was_committed(make_desk):
    """Another thread reads while a transaction is open: it is answered from the last
    commit (a read that waited for the writer would end in a busy error instead)."""
    desk = make_desk(NOW)
    store = desk.ctx.store
    desk.receive(_mail("Vorher", "anna@kunde.example"))
    seen: list[list[str]] = []
    errors: list[Exception] = []

    def reader():
        try:
            seen.append([row["subject"] for row in store.rows("SELECT subject FROM tickets")])
        except Exception as exc:  # the test reports it
            errors.append(exc)

    with store.transaction():
        store.execute("UPDATE tickets SET subject = ?", ("Während",))
        thread = threading.Thread(target=reader)
        thread.start()
        thread.join()  # inside the transaction: the read is done before it ends
    assert errors == []
    assert seen == [["Vorher"]]
    assert _subjects(desk) == ["Während"]


def test_a_savepoint_undoes_its_part_only(make_desk):
    desk = make_desk(NOW)
    store = desk.ctx.store
    desk.receive(_mail("Alt", "anna@kunde.example"))
    with pytest.raises(RuntimeError, match="inside a transaction"), store.savepoint():
        pass
    with store.transaction():
        store.execute("UPDATE tickets SET subject = ?", ("Erster Teil",))
        with pytest.raises(ValueError), store.savepoint():
            store.execute("UPDATE tickets SET subject = ?", ("Zweiter Teil",))
            raise ValueError("this part fails")
        with store.savepoint():
            store.execute("UPDATE tickets SET priority = ?", ("high",))
    [row] = store.rows("SELECT subject, priority FROM tickets")
    assert (row["subject"], row["priority"]) == ("Erster Teil", "high")


def test_a_warm_reader_reads_the_next_mail_with_the_settings_in_force(make_desk):
    """Readers keep the instance's settings between mails; a reload reaches the next mail
    the same reader reads: here, an address that became an agent's."""
    desk = make_desk(NOW)
    carla = ("Carla Neu", "carla@example.com")
    assert desk.receive(build_mail(subject="Zugang", sender=carla)).status == "created"

    desk.instance.settings["team.agents"] = [*AGENTS, {"address": carla[1],
                                                       "name": carla[0]}]
    desk.instance.write()
    desk.ctx.reload(load(desk.instance.config_path))

    outcome = desk.receive(build_mail(subject="Zugang zwei", sender=carla))
    assert outcome.status == "suspicious"  # an agent's mail without a signed reply address
    assert outcome.detail == "agent address without a valid reply address"
