"""Helpers for the web tests: a real config in a temp dir, customer mails, links from mails."""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from mailbot.context import Context, open_context
from mailbot.inbound import pipeline
from mailbot.settings import config as config_mod
from mailbot.store import outbox as oq
from mailbot.store import tickets as tq

AGENTS = (("agent1@example.com", "Anna Agent"), ("agent2@example.com", "Bernd Agent"))
LINK = re.compile(r"https?://[^\s<>\"]+/(?:escalate|t)/[A-Za-z0-9_.-]+")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def write_config(root: Path, web_port: int, relay_port: int = 0, language: str = "de",
                 web: str = "") -> Path:
    """A real mailbot.toml under ``root``: data dir, web port (``web``: more [web] lines),
    agents, optional SMTP relay."""
    relay = f'[relay]\nhost = "127.0.0.1"\nport = {relay_port}\nsecurity = "plain"\n' \
        if relay_port else ""
    agents = "".join(f'[[team.agents]]\naddress = "{a}"\nname = "{n}"\n' for a, n in AGENTS)
    path = root / "mailbot.toml"
    path.write_text(
        f'[service]\ndata_dir = "data"\nlanguage = "{language}"\n'
        f'[support]\naddress = "support@example.com"\nname = "Example Support"\n'
        f'signing_secret = "test-secret-not-for-production"\n'
        f'[listener]\nenabled = false\n'
        f'[web]\nhost = "127.0.0.1"\nport = {web_port}\n'
        f'base_url = "http://127.0.0.1:{web_port}"\nmax_body_bytes = 4096\n{web}'
        f"{relay}{agents}", encoding="utf-8")
    return path


def context_for(path: Path) -> Context:
    """The context a mailbot process would open with this config file."""
    return open_context(config_mod.load(path, require_file=True))


def customer_mail(subject: str = "Kassensystem startet nicht", body: str = "Hilfe!\n",
                  sender: str = "Karla Kunde <karla@kunde.example>",
                  attachments: tuple[tuple[str, str, bytes], ...] = ()) -> bytes:
    """A customer's mail to support as raw bytes, with optional (name, type, payload) files."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = email.utils.make_msgid(domain="kunde.example")
    msg.set_content(body)
    for name, content_type, payload in attachments:
        maintype, _, subtype = content_type.partition("/")
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


def file_ticket(ctx: Context, raw: bytes | None = None) -> dict:
    """File a customer mail through the real pipeline; the new ticket."""
    outcome = pipeline.ingest(ctx, raw or customer_mail(), "test")
    assert outcome.status == "created", outcome
    return tq.by_number(ctx.store, outcome.ticket_number)


def outbox_mails(ctx: Context, kind: str) -> list[EmailMessage]:
    """The undelivered outbox mails of one kind, parsed (get_content undoes quoted-printable)."""
    rows = oq.due(ctx.store, datetime.now(UTC) + timedelta(days=3650), 10000)
    return [email.message_from_bytes(r["raw"], policy=email.policy.default)
            for r in rows if r["kind"] == kind]


def links_in(mail: EmailMessage) -> dict[str, str]:
    """The customer links in a mail's text, by kind: ``escalate`` and ``ticket``."""
    found = LINK.findall(mail.get_body(("plain",)).get_content())
    return {("escalate" if "/escalate/" in url else "ticket"): url for url in found}


def form_field(html: str) -> str:
    """The CSRF field of the form on a page."""
    found = CSRF.search(html)
    assert found, "no form on the page"
    return found.group(1)


def path_of(url: str) -> str:
    """The path part of a link (for the aiohttp test client)."""
    return "/" + url.split("/", 3)[3]


def expired_token(ctx: Context, purpose: str, number: str) -> str:
    """A genuine link token issued long enough ago to have expired."""
    age = ctx.signer.max_age_seconds + 3600

    class Past(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - age

    serializer = URLSafeTimedSerializer([*ctx.signer.old_secrets, ctx.signer.secret],
                                        salt=f"mailbot-{purpose}", signer=Past)
    return serializer.dumps({"t": number})


def snapshot(ctx: Context, ticket_id: int) -> tuple:
    """Everything a request could change about a ticket: row, events, messages, outbox."""
    return (tq.by_id(ctx.store, ticket_id), len(tq.events(ctx.store, ticket_id)),
            len(tq.messages(ctx.store, ticket_id)),
            oq.outbox_rows(ctx.store, None))
