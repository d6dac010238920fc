"""Limits on inbound mail: oversized or over-nested mail is quarantined with the reason and can be
retried after the limit is raised; attachment names never become paths; hostile bodies
(a pathological quote line, huge or deeply nested HTML) do not stall the pipeline.
"""

from __future__ import annotations

import hashlib
import json
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

import pytest
from hygiene_kit import (
    SUPPORT,
    Clock,
    detail,
    ingest,
    make_ctx,
    run_cli,
    ticket_count,
    write_config,
)
from mails import as_bytes, build_mail

from mailbot.context import Context
from mailbot.store import inbound as iq

SMALL_LIMITS = """
[limits]
max_message_bytes = 200000
max_attachments = 3
max_attachment_bytes = 20000
max_mime_depth = 5
max_headers = 60
"""
RAISED_LIMITS = """
[limits]
max_message_bytes = 2000000
max_attachments = 10
max_attachment_bytes = 200000
max_mime_depth = 20
max_headers = 500
"""
AGENT = """
[[team.agents]]
address = "anna@example.com"
name = "Anna Berg"
"""


def nested(depth: int) -> bytes:
    """A mail whose MIME tree is ``depth`` multiparts deep."""
    part = MIMEText("innen\n", "plain", "utf-8")
    for _ in range(depth):
        outer = MIMEMultipart("mixed")
        outer.attach(part)
        part = outer
    part["From"] = "Kunde <kunde@kunde.example>"
    part["To"] = SUPPORT
    part["Subject"] = "Verschachtelt"
    part["Message-ID"] = f"<nested.{depth}@kunde.example>"
    return as_bytes(part)


OVER_LIMIT = {
    "limits.max_message_bytes": lambda: build_mail(text="Sehr lang. " * 25000),
    "limits.max_attachments": lambda: build_mail(attachments=tuple(
        (f"bild{i}.png", "image/png", b"png" * 10) for i in range(5))),
    "limits.max_attachment_bytes": lambda: build_mail(attachments=(
        ("gross.pdf", "application/pdf", b"%PDF" * 10000),)),
    "limits.max_mime_depth": lambda: nested(8),
    "limits.max_headers": lambda: build_mail(headers=tuple(
        ("X-Extra", str(i)) for i in range(80))),
}


@pytest.mark.parametrize("limit", sorted(OVER_LIMIT))
def test_over_limit_is_quarantined_and_retried_after_raising(tmp_path: Path, limit: str) -> None:
    """A mail over a limit is held with a reason naming the limit; raised, the retry files it."""
    ctx = make_ctx(tmp_path, SMALL_LIMITS)
    raw = OVER_LIMIT[limit]()
    outcome = ingest(ctx, raw)
    assert outcome.status == "quarantined"
    assert limit in outcome.detail
    assert ticket_count(ctx) == 0
    [entry] = iq.quarantined(ctx.store)
    assert limit in entry["error"]
    assert ctx.spool.get(entry["sha256"]) == raw
    listed = run_cli(ctx, "quarantine", "list", "--json")
    assert limit in json.loads(listed.output)[0]["error"]
    assert run_cli(ctx, "quarantine", "retry").exit_code == 65  # still over the limit
    write_config(tmp_path, RAISED_LIMITS)
    retried = run_cli(ctx, "quarantine", "retry")
    assert retried.exit_code == 0, retried.output
    assert "created" in retried.output
    assert ticket_count(ctx) == 1
    assert iq.quarantined(ctx.store) == []


HOSTILE_NAMES = ("../../etc/passwd", "C:\\evil.exe", "\x00.txt", "x" * 3000 + ".pdf", "..",
                 "/etc/shadow", "..\\..\\boot.ini", "über/../../../tmp/x.sh", "con:aux|*?.txt",
                 " .hidden", "a/b/c/d.doc")


def test_attachment_names_never_become_paths(tmp_path: Path) -> None:
    """Hostile attachment names are shown sanitised; files live only under files/<hash>."""
    ctx = make_ctx(tmp_path, "[limits]\nmax_attachments = 20\n")
    attachments = tuple((name, "application/octet-stream", f"inhalt {i}".encode())
                        for i, name in enumerate(HOSTILE_NAMES))
    outcome = ingest(ctx, build_mail(attachments=attachments))
    assert outcome.status == "created", outcome
    shown = detail(ctx, outcome.ticket_number)["messages"][0]["attachments"]
    assert len(shown) == len(HOSTILE_NAMES)
    for attachment in shown:
        name = attachment["filename"]
        assert name and not set(name) & set("/\\\x00:") and not name.startswith(".")
        assert len(name) <= 200
    assert_files_only_under_data_dir(ctx, tmp_path, {a["sha256"] for a in shown})


def assert_files_only_under_data_dir(ctx: Context, root: Path, hashes: set[str]) -> None:
    """Nothing outside the data directory; attachments only as files/<2 hex>/<sha256>."""
    data = ctx.config.data_dir
    for path in root.rglob("*"):
        if path.is_file():
            assert path == root / "mailbot.toml" or data in path.parents, path
    files = data / "files"
    stored = [p for p in files.rglob("*") if p.is_file()]
    assert {p.name for p in stored} == hashes
    for path in stored:
        assert path.parent.parent == files and path.parent.name == path.name[:2]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def test_encoded_word_path_name_is_sanitised(tmp_path: Path) -> None:
    """A path hidden in an encoded-word filename is still only a display name."""
    ctx = make_ctx(tmp_path)
    raw = build_mail(attachments=(("placeholder.txt", "text/plain", b"x"),)).replace(
        b'filename="placeholder.txt"', b'filename="=?utf-8?q?=2E=2E=2F=2E=2E=2Fetc=2Fpasswd?="')
    outcome = ingest(ctx, raw)
    [attachment] = detail(ctx, outcome.ticket_number)["messages"][0]["attachments"]
    assert "/" not in attachment["filename"] and ".." not in attachment["filename"]
    assert not (tmp_path / "etc").exists()


def test_pathological_quote_line_in_agent_reply_returns(tmp_path: Path) -> None:
    """An agent reply with a hostile 20 KB quote line is filed (the pipeline goes on)."""
    ctx = make_ctx(tmp_path, AGENT, clock=Clock())
    number = ingest(ctx, build_mail()).ticket_number
    reply_to = ctx.composer.reply_address(number, "anna@example.com", ctx.clock())
    line = ("Am schrieb " * 2000)[:20000]
    outcome = ingest(ctx, build_mail(sender=("Anna Berg", "anna@example.com"), to=reply_to,
                                     subject=f"Re: [Ticket#{number}]", text=line + "\n"))
    assert outcome.status in ("agent_reply", "note")
    assert outcome.ticket_number == number
    customer = ingest(ctx, build_mail(subject="Zitat", text=("> " + line + "\n") * 3))
    assert customer.status == "created"


HOSTILE_HTML = {
    "5mb-body": "<html><body>" + "<p>Sehr <b>viel</b> Text &amp; mehr.</p>\n" * 130000,
    "nested-lists": "<ul>" * 50000 + "<li>x" * 50000,
    "nested-quotes": "<blockquote>" * 50000 + "Zeile<br>" * 30000,
    "nested-divs": "<div>" * 100000 + "x" + "</div>" * 100000,
}


@pytest.mark.parametrize("shape", sorted(HOSTILE_HTML))
def test_huge_or_deep_html_does_not_stall(tmp_path: Path, shape: str) -> None:
    """A 5 MB HTML body or deeply nested HTML is filed, its text bounded by the limit."""
    ctx = make_ctx(tmp_path)
    outcome = ingest(ctx, build_mail(text=None, html=HOSTILE_HTML[shape], transfer="base64"))
    assert outcome.status == "created", outcome
    body = detail(ctx, outcome.ticket_number)["messages"][0]["body"]
    assert 0 < len(body) <= 10 * ctx.config.limits.max_html_chars
