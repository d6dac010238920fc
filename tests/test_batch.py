"""A batch of mails (`mailbot ingest FILE...`): filed one after the other, each seeing what
the mails before it did, and made durable once at the end."""

from __future__ import annotations

import pytest
from daemon_util import Instance
from mails import build_mail

EX_OK, EX_DATAERR = 0, 65


@pytest.fixture
def bot(tmp_path) -> Instance:
    """An instance without a relay, reading each mail in a reader process (the default)."""
    return Instance(tmp_path)


def _files(tmp_path, mails: list[bytes]) -> list[str]:
    paths = []
    for n, raw in enumerate(mails):
        path = tmp_path / f"{n:02d}.eml"
        path.write_bytes(raw)
        paths.append(str(path))
    return paths


def test_a_follow_up_in_the_same_batch_finds_the_ticket_its_first_mail_opened(bot, tmp_path):
    """Mail 2 answers mail 1 and mail 4 answers mail 3, all in one batch that is made durable
    only at its end: each answer is a follow-up on the ticket its first mail opened."""
    mails = [build_mail(subject="Drucker", message_id="a1@kunde.example"),
             build_mail(subject="Re: Drucker", message_id="a2@kunde.example",
                        in_reply_to="<a1@kunde.example>"),
             build_mail(subject="Scanner", message_id="b1@kunde.example"),
             build_mail(subject="Re: Scanner", message_id="b2@kunde.example",
                        in_reply_to="<b1@kunde.example>")]
    result = bot.cli("ingest", *_files(tmp_path, mails))
    assert result.exit_code == EX_OK, result.stdout
    statuses = [line.split()[1] for line in result.stdout.splitlines()]
    assert statuses == ["created", "followup", "created", "followup"]
    assert sorted(t["subject"] for t in bot.tickets()) == ["Drucker", "Scanner"]


def test_the_same_bytes_twice_in_one_batch_are_one_ticket_and_a_duplicate(bot, tmp_path):
    """The copies after the first are recognised as the same bytes before the first is
    durable: not quarantined, not a second ticket."""
    raw = build_mail(subject="Doppelt", message_id="same@kunde.example")
    result = bot.cli("ingest", *_files(tmp_path, [raw, raw, raw]))
    assert result.exit_code == EX_OK
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["created", "duplicate", "duplicate"]
    assert all("same bytes" in line for line in lines[1:])
    assert [t["subject"] for t in bot.tickets()] == ["Doppelt"]
    assert bot.cli_json("quarantine", "list") == []


def test_a_refused_input_ends_the_batch_after_the_mails_before_it(bot, tmp_path):
    """With oversize = "reject", an input over the size limit stops the command (65); the
    mails before it are filed and kept (made durable although the command fails)."""
    bot.update("limits", max_message_bytes=20_000, oversize="reject")
    mails = [build_mail(subject=f"Klein {n}", message_id=f"k{n}@kunde.example")
             for n in range(3)]
    mails.append(build_mail(subject="Riesig", text="x" * 40_000, message_id="big@k.example"))
    mails.append(build_mail(subject="Danach", message_id="after@kunde.example"))
    result = bot.cli("ingest", *_files(tmp_path, mails))
    assert result.exit_code == EX_DATAERR
    assert sorted(t["subject"] for t in bot.tickets()) == ["Klein 0", "Klein 1", "Klein 2"]
