"""Hostile and broken input: no mail, however mangled, gets past the quarantine or is lost.

Hypothesis starts from real-looking mails (the corpus, mails as mail programs write them,
our own acknowledgements) and mutates them: broken MIME boundaries, wrong or unknown
charsets, huge headers, NUL bytes, invalid dates, missing From, truncated base64, bad
encoded-words and random byte flips; pure random bytes are thrown in too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import pytest
from hygiene_kit import DATA, Clock, make_ctx, outbox_rows
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mails import ENCODINGS, build_mail, encoded_mail
from mutants import is_sentence, mutants

from mailbot.context import Context
from mailbot.inbound import pipeline
from mailbot.reading import classify
from mailbot.reading.message import ParseError, parse
from mailbot.store import inbound as iq
from mailbot.store import tickets as tq
from mailbot.tickets import threads

FILED = {"created", "followup", "note", "bounce", "agent_reply", "suspicious"}
OUTCOMES = FILED | {"ignored", "duplicate", "quarantined"}
FUZZ = settings(max_examples=150, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seeds() -> list[bytes]:
    corpus = [p.read_bytes() for p in sorted(DATA.glob("*/*.eml"))]
    built = [encoded_mail(case) for case in ENCODINGS]
    built += [
        build_mail(html="<p>Hallo <b>Welt</b></p>", attachments=(
            ("Bericht.pdf", "application/pdf", b"%PDF-1.4 " * 200),
            ("Übersicht.xlsx", "application/vnd.ms-excel", bytes(range(256)) * 4))),
        build_mail(subject="Re: [Ticket#202611240001] Drucker", in_reply_to="x@kunde.example",
                   references=("a@kunde.example", "mb.202611240001.0a.0b@example.com")),
        build_mail(text=None, html="<ul><li>eins<li>zwei</ul>", transfer="base64"),
    ]
    return corpus + built


SEEDS = _seeds()
Mutation = Callable[[bytes, st.DrawFn], bytes]


def _at(raw: bytes, draw: st.DrawFn) -> int:
    return draw(st.integers(0, max(0, len(raw))))


def flip_bytes(raw: bytes, draw: st.DrawFn) -> bytes:
    """Random byte flips anywhere."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 20))):
        if data:
            data[_at(raw, draw) % len(data)] = draw(st.integers(0, 255))
    return bytes(data)


def insert_nuls(raw: bytes, draw: st.DrawFn) -> bytes:
    """NUL bytes in headers or body."""
    at = _at(raw, draw)
    return raw[:at] + b"\x00" * draw(st.integers(1, 50)) + raw[at:]


def truncate(raw: bytes, draw: st.DrawFn) -> bytes:
    """The mail cut off mid-way (truncated base64, unterminated multipart)."""
    return raw[:_at(raw, draw)]


def break_boundaries(raw: bytes, draw: st.DrawFn) -> bytes:
    """Boundaries that do not match, are missing or are declared twice."""
    choice = draw(st.sampled_from(["rename", "drop-close", "garble-param", "empty"]))
    match = re.search(rb'boundary="?([^";\r\n]+)"?', raw, re.IGNORECASE)
    if match is None:
        return raw.replace(b"\r\n\r\n", b'\r\nContent-Type: multipart/mixed; boundary=""'
                           b"\r\n\r\n", 1)
    boundary = match.group(1)
    if choice == "rename":
        return raw.replace(b"--" + boundary, b"--" + boundary[::-1], draw(st.integers(1, 3)))
    if choice == "drop-close":
        return raw.replace(b"--" + boundary + b"--", b"")
    if choice == "garble-param":
        return raw.replace(match.group(0), b'boundary="\x00;;', 1)
    return raw.replace(match.group(0), b'boundary=""', 1)


def wrong_charset(raw: bytes, draw: st.DrawFn) -> bytes:
    """Charsets that are wrong for the bytes, or unknown."""
    bad = draw(st.sampled_from([b"x-unknown-42", b"utf-16", b"utf-7", b"iso-2022-jp", b"",
                                b"ascii", b"utf-8\x00", b"\xff\xfe"]))
    return re.sub(rb'charset="?[\w-]+"?', b'charset="' + bad + b'"', raw, flags=re.IGNORECASE)


def huge_header(raw: bytes, draw: st.DrawFn) -> bytes:
    """A huge header line or very many folded continuation lines."""
    size = draw(st.integers(1000, 200_000))
    name = draw(st.sampled_from([b"Subject", b"X-Huge", b"References", b"To", b"From"]))
    value = draw(st.sampled_from([b"A" * size, b"<a@b> " * (size // 6), b" x\r\n" * (size // 4)]))
    return name + b": " + value + b"\r\n" + raw


def invalid_date(raw: bytes, draw: st.DrawFn) -> bytes:
    """Dates no calendar knows."""
    date = draw(st.sampled_from([b"Mon, 32 Foo 99999 25:61:61 +9999", b"", b"\xff\xfe",
                                 b"0", b"Tue, 24 Nov 2026 10:00:00 +2500", b"yesterday"]))
    raw = re.sub(rb"(?im)^Date:.*\r?\n", b"", raw)
    return b"Date: " + date + b"\r\n" + raw


def drop_from(raw: bytes, draw: st.DrawFn) -> bytes:
    """No From header (or an empty one, or one without an address)."""
    raw = re.sub(rb"(?im)^From:.*\r?\n(?:[ \t].*\r?\n)*", b"", raw)
    extra = draw(st.sampled_from([b"", b"From:\r\n", b"From: <>\r\n", b"From: Kunde\r\n",
                                  b"From: @@@\r\n"]))
    return extra + raw


def bad_encoded_words(raw: bytes, draw: st.DrawFn) -> bytes:
    """Encoded-words with bad base64, unknown charsets, broken quoted-printable."""
    long_word = b"=?iso-8859-1?q?" + b"=E4" * 5000 + b"?="
    word = draw(st.sampled_from([b"=?utf-8?b?!!!?=", b"=?x-bad?q?=ZZ?=", b"=?utf-8?q?=C3?=",
                                 b"=?utf-8?b?w6Q?=", b"=?utf-8?x?abc?=", b"=?\xff?b?AA==?=",
                                 b"=?utf-8*de?q?a?= =?", long_word]))
    header = draw(st.sampled_from([b"Subject", b"From", b"To", b"Cc"]))
    return header + b": " + word + b" <x@" + word + b">\r\n" + raw


def random_insert(raw: bytes, draw: st.DrawFn) -> bytes:
    """Random bytes spliced in anywhere."""
    at = _at(raw, draw)
    return raw[:at] + draw(st.binary(max_size=200)) + raw[at:]


MUTATIONS: tuple[Mutation, ...] = (flip_bytes, insert_nuls, truncate, break_boundaries,
                                   wrong_charset, huge_header, invalid_date, drop_from,
                                   bad_encoded_words, random_insert)


@st.composite
def mutated_mail(draw: st.DrawFn) -> bytes:
    """A real-looking mail with one to three mutations applied."""
    raw = draw(st.sampled_from(SEEDS))
    if draw(st.booleans()):  # a new mail, not a re-delivery: the whole path runs
        fresh = b"Message-ID: <fuzz.%d@kunde.example>\r\n" % draw(st.integers(0, 2**40))
        raw = fresh + re.sub(rb"(?im)^Message-ID:.*\r?\n", b"", raw)
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
        raw = mutation(raw, draw)
    return raw


MAILS = st.one_of(mutated_mail(), mutated_mail(), st.binary(max_size=3000),
                  st.sampled_from(SEEDS))


@pytest.fixture(scope="module")
def fuzz_ctx(tmp_path_factory: pytest.TempPathFactory) -> Context:
    """One instance (real SQLite file) for all examples, so mails meet earlier tickets."""
    extra = '[[team.agents]]\naddress = "anna.berg@example.com"\nname = "Anna"\n'
    return make_ctx(tmp_path_factory.mktemp("fuzz"), extra, clock=Clock())


@FUZZ
@given(raw=MAILS)
def test_ingest_never_raises_and_never_loses_mail(fuzz_ctx: Context, raw: bytes) -> None:
    """Whatever arrives ends filed, ignored or quarantined with its raw bytes and error."""
    ctx = fuzz_ctx
    try:
        outcome = pipeline.ingest(ctx, raw, "fuzz")
    except pipeline.TemporaryFailure:
        return  # allowed: the source keeps the mail and retries it later
    assert outcome.status in OUTCOMES, outcome
    event(outcome.status)
    sha = hashlib.sha256(raw).hexdigest()
    record = iq.ingest_by_sha(ctx.store, sha)
    assert record is not None
    assert ctx.spool.get(sha) == raw
    if outcome.status == "quarantined":
        assert_quarantined(ctx, sha, raw)
    elif outcome.status in FILED:
        ticket = tq.by_number(ctx.store, outcome.ticket_number)
        assert ticket is not None and record["ticket_id"] == ticket["id"]
    assert all("@" in a for row in outbox_rows(ctx)[-3:] for a in row["recipients"])


def assert_quarantined(ctx: Context, sha: str, raw: bytes) -> None:
    """Held with its error; a retry runs without crashing and holds it again."""
    entries = [e for e in iq.quarantined(ctx.store) if e["sha256"] == sha]
    assert entries and entries[-1]["error"]
    results = pipeline.retry_quarantined(ctx, (entries[-1]["id"],))
    assert [o.status for _, o in results] == ["quarantined"]
    assert iq.ingest_by_sha(ctx.store, sha)["outcome"] == "quarantined"


@FUZZ
@given(raw=MAILS)
def test_parse_classify_thread_are_total(fuzz_ctx: Context, raw: bytes) -> None:
    """Parsing fails only with ParseError; whatever parses can be classified and threaded."""
    ctx = fuzz_ctx
    try:
        msg = parse(raw, ctx.config.limits)
    except ParseError:
        return
    verdict = classify.classify(msg, pipeline.classify_context(ctx))
    assert verdict.kind in {"customer", "agent", "auto_reply", "bounce", "robot", "loop"}
    classify.parse_bounce(msg)
    threads.find(msg, signer=ctx.signer, support_addresses=ctx.config.support.addresses,
                 tag=threads.tag_pattern(ctx.config.tickets.tag_prefix),
                 lookup=lambda mid: None)


def test_everything_quarantined_can_be_retried(fuzz_ctx: Context) -> None:
    """After the fuzzing, retrying the whole quarantine runs through without a crash."""
    for seed in (b"", b"\x00" * 10, b"From: x\r\n\r\n" + b"\xff" * 100):
        pipeline.ingest(fuzz_ctx, seed, "fuzz")
    results = pipeline.retry_quarantined(fuzz_ctx)
    assert results and all(o.status in OUTCOMES for _, o in results)
    assert all(r["status"] in {"pending", "held"} for r in outbox_rows(fuzz_ctx))


# What a mutant may become: filed somewhere, or held in the quarantine.
SETTLED = OUTCOMES | {"spam"}
MUTANTS = 1200  # about 10 s on one core; bench/fuzz.py runs 100,000


def settle(ctx: Context, description: str, raw: bytes) -> str:
    """What is wrong with the fate of one mutant ('' when nothing is)."""
    try:
        outcome = pipeline.ingest(ctx, raw, "fuzz")
    except Exception as exc:
        return f"{description}: raised {exc!r}"
    sha = hashlib.sha256(raw).hexdigest()
    held = [e for e in iq.quarantined(ctx.store) if e["sha256"] == sha] \
        if outcome.status == "quarantined" else []
    if outcome.status not in SETTLED:
        return f"{description}: outcome {outcome.status!r}"
    if iq.ingest_by_sha(ctx.store, sha) is None and not held:
        return f"{description}: no ingest record, not in the quarantine"
    if outcome.status == "quarantined" and not (
            held and all(is_sentence(r) for r in (outcome.detail, held[-1]["error"]))):
        return f"{description}: quarantined without a sentence: {outcome.detail!r}"
    if outcome.detail == pipeline.refusal(RuntimeError()):
        return f"{description}: quarantined by an error of mailbot's (see the log)"
    return ""


def test_mutants_are_filed_or_quarantined_in_words(tmp_path) -> None:
    """Every seeded mutant (tests/mutants.py) is filed or held with a reason for people,
    never an exception, and each leaves an ingest record: nothing is lost."""
    ctx = make_ctx(tmp_path, clock=Clock())
    found = [settle(ctx, description, raw) for description, raw in mutants(20, MUTANTS)]
    assert [f for f in found if f] == []
    statuses = {row["outcome"] for row in ctx.store.rows("SELECT outcome FROM ingest")}
    assert {"created", "quarantined", "duplicate"} <= statuses
