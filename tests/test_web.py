"""HTTP-level tests of the customer web server: escalation, ticket page, downloads, headers.

Each test talks to the real aiohttp application on a loopback port (aiohttp's
TestServer) over real HTTP, with a real config, store and pipeline in tmp_path.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from webutil import (
    context_for,
    customer_mail,
    expired_token,
    file_ticket,
    form_field,
    links_in,
    outbox_mails,
    path_of,
    snapshot,
    write_config,
)

from mailbot.context import Context
from mailbot.store import public as wq
from mailbot.store import tickets as tq
from mailbot.web.forms import FORM_SALT
from mailbot.web.server import make_app

PNG = b"\x89PNG\r\n\x1a\n-not-really-an-image"


@pytest.fixture
def ctx(tmp_path) -> AsyncIterator[Context]:
    """A mailbot context on a real config and database in tmp_path (posts not throttled:
    tests/test_forms.py covers that)."""
    context = context_for(write_config(tmp_path, web_port=8080,
                                       web="max_posts_per_ticket_per_minute = 0\n"))
    yield context
    context.store.close()


@pytest.fixture
async def client(ctx: Context) -> AsyncIterator[TestClient]:
    """An HTTP client talking to the app served on a free loopback port."""
    async with TestClient(TestServer(make_app(ctx))) as http:
        yield http


@pytest.fixture
def ticket(ctx: Context, client: TestClient) -> dict:
    """A ticket filed from a real customer mail with an HTML body and two attachments."""
    raw = customer_mail(subject="Kasse <b>kaputt</b>",
                        body="Seit heute früh geht nichts.\n<script>alert(1)</script>\n",
                        attachments=(("fehler.png", "image/png", PNG),
                                     ("bericht.html", "text/html", b"<h1>hi</h1>")))
    return file_ticket(ctx, raw)


def links(ctx: Context) -> dict[str, str]:
    """The escalation and ticket paths from the first acknowledgement in the outbox."""
    return {k: path_of(v) for k, v in links_in(outbox_mails(ctx, "acknowledgement")[0]).items()}


async def page(client: TestClient, path: str, status: int = 200) -> str:
    """GET a page, check its status, return its HTML."""
    response = await client.get(path, allow_redirects=False)
    assert response.status == status, await response.text()
    return await response.text()


async def csrf_of(client: TestClient, path: str) -> str:
    """The CSRF field of the form on a page."""
    return form_field(await page(client, path))


def tampered(path: str) -> str:
    """The same link with one character of its signature changed.

    Not the last character: in base64 its low bits may be padding, so changing it can leave
    the signature as it was.
    """
    head, char, tail = path[:-5], path[-5], path[-4:]
    return head + ("A" if char != "A" else "B") + tail


# -- escalation ------------------------------------------------------------------------------


async def test_escalation_page_shows_ticket_notice_and_known_phone(ctx, client, ticket):
    """The escalation link shows number, subject, status, the charging note and my phone."""
    ctx.store.update_row("contacts", ticket["contact_id"], {"phone": "+49 89 1234567"})
    html = await page(client, links(ctx)["escalate"])
    assert ticket["number"] in html
    assert "Kasse &lt;b&gt;kaputt&lt;/b&gt;" in html
    assert "<b>kaputt" not in html
    assert "<dd>neu</dd>" in html
    assert ctx.config.web.escalation_notice_de in html
    assert 'value="+49 89 1234567"' in html
    assert '<form method="post">' in html


async def test_escalation_page_speaks_english_for_english_tickets(ctx, client, ticket):
    """A customer whose ticket is in English gets the escalation page in English."""
    tq.update(ctx.store, ticket["id"], language="en")
    html = await page(client, links(ctx)["escalate"])
    assert "Escalate ticket" in html
    assert ctx.config.web.escalation_notice_en in html
    assert 'lang="en"' in html


async def test_opening_the_links_changes_nothing(ctx, client, ticket):
    """A mail scanner opening the links in my mail neither escalates nor changes the ticket."""
    before = snapshot(ctx, ticket["id"])
    for _ in range(3):
        await page(client, links(ctx)["escalate"])
        await page(client, links(ctx)["ticket"])
    assert snapshot(ctx, ticket["id"]) == before
    assert tq.by_id(ctx.store, ticket["id"])["escalated_at"] is None


async def test_confirming_escalates_once_and_mails_agents_and_customer(ctx, client, ticket):
    """Confirming escalates the ticket to urgent, mails every agent and confirms to me."""
    path = links(ctx)["escalate"]
    form = {"csrf": await csrf_of(client, path), "phone": " +49 (89) 555-0100 "}
    response = await client.post(path, data=form)
    assert response.status == 200
    assert "Rückruf-Service aktiviert" in await response.text()
    escalated = tq.by_id(ctx.store, ticket["id"])
    assert escalated["escalated_at"] and escalated["priority"] == "urgent"
    assert escalated["escalation_phone"] == "+49 (89) 555-0100"
    assert [e["kind"] for e in tq.events(ctx.store, ticket["id"])].count("escalated") == 1
    agent_mails = outbox_mails(ctx, "agent_escalation")
    assert sorted(m["To"] for m in agent_mails) == ["agent1@example.com", "agent2@example.com"]
    assert "+49 (89) 555-0100" in agent_mails[0].get_content()
    confirmation = outbox_mails(ctx, "escalation_confirmed")
    assert [m["To"] for m in confirmation] == ["karla@kunde.example"]
    assert ctx.config.web.escalation_notice_de in " ".join(confirmation[0].get_content().split())


async def test_second_escalation_says_already_escalated_and_changes_nothing(ctx, client, ticket):
    """Confirming a second time (or reloading) shows "already escalated" and changes nothing."""
    path = links(ctx)["escalate"]
    form = {"csrf": await csrf_of(client, path), "phone": "0891234567"}
    assert (await client.post(path, data=form)).status == 200
    before = snapshot(ctx, ticket["id"])
    again = await client.post(path, data={**form, "phone": "0301111111"})
    assert again.status == 200
    assert "Bereits eskaliert" in await again.text()
    assert "Bereits eskaliert" in await page(client, path)
    assert snapshot(ctx, ticket["id"]) == before
    assert tq.by_id(ctx.store, ticket["id"])["escalation_phone"] == "0891234567"


async def test_escalation_needs_a_real_phone_number(ctx, client, ticket):
    """Without a usable phone number the form comes back with a hint and nothing happens."""
    path = links(ctx)["escalate"]
    before = snapshot(ctx, ticket["id"])
    response = await client.post(path, data={"csrf": await csrf_of(client, path),
                                             "phone": "call me <maybe>"})
    assert response.status == 400
    html = await response.text()
    assert "Bitte geben Sie eine Telefonnummer an" in html
    assert 'value="call me &lt;maybe&gt;"' in html
    assert snapshot(ctx, ticket["id"]) == before


@pytest.mark.parametrize("kind", ["escalate", "ticket"])
async def test_bad_links_get_one_neutral_not_found_page(ctx, client, ticket, kind):
    """Tampered, made-up, wrong-purpose and unknown-ticket links all get the same 404 page."""
    good = links(ctx)[kind]
    prefix = good.rsplit("/", 1)[0]
    other_purpose = "ticket" if kind == "escalate" else "escalate"
    bad = [tampered(good), f"{prefix}/nonsense", f"{prefix}/a.b.c",
           f"{prefix}/{ctx.signer.link_token(other_purpose, ticket['number'])}",
           f"{prefix}/{ctx.signer.link_token(kind, '209901010001')}"]
    bodies = {await page(client, path, 404) for path in bad}
    assert len(bodies) == 1
    body = bodies.pop()
    assert "Link ungültig" in body
    assert ticket["number"] not in body and "kaputt" not in body


@pytest.mark.parametrize("kind", ["escalate", "ticket"])
async def test_expired_links_are_gone(ctx, client, ticket, kind):
    """A link older than the configured lifetime gets a 410 page without ticket details."""
    prefix = "/escalate" if kind == "escalate" else "/t"
    body = await page(client, f"{prefix}/{expired_token(ctx, kind, ticket['number'])}", 410)
    assert "nicht mehr gültig" in body
    assert ticket["number"] not in body


async def test_closed_ticket_cannot_be_escalated(ctx, client, ticket):
    """Escalating a closed ticket gives a 410 page, for the link and the form alike."""
    path = links(ctx)["escalate"]
    csrf = await csrf_of(client, path)
    tq.update(ctx.store, ticket["id"], status="closed")
    before = snapshot(ctx, ticket["id"])
    assert "nicht mehr gültig" in await page(client, path, 410)
    response = await client.post(path, data={"csrf": csrf, "phone": "0891234567"})
    assert response.status == 410
    assert snapshot(ctx, ticket["id"]) == before


def old_form_field(ctx: Context, purpose: str, token: str) -> str:
    """A form field that was genuine but was issued before the form lifetime."""
    age = ctx.config.web.form_max_age_seconds + 60

    class Past(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - age

    serializer = URLSafeTimedSerializer(ctx.signer.secret, salt=FORM_SALT, signer=Past)
    return serializer.dumps({"p": purpose, "k": hashlib.sha256(token.encode()).hexdigest()[:32],
                             "n": secrets.token_urlsafe(16)})


async def test_forms_without_a_valid_csrf_field_are_refused(ctx, client, ticket):
    """A form posted without, with a forged, foreign or stale CSRF field gets 403."""
    other = file_ticket(ctx, customer_mail(subject="Anderes Ticket"))
    mine = links(ctx)
    before = snapshot(ctx, ticket["id"])
    for kind, path, field in (("escalate", mine["escalate"], "phone"),
                              ("ticket", mine["ticket"], "text")):
        other_kind = "ticket" if kind == "escalate" else "escalate"
        wrong = [{}, {"csrf": "forged"},
                 {"csrf": await csrf_of(client, path_of(ctx.link(kind, other["number"])))},
                 {"csrf": await csrf_of(client, mine[other_kind])},
                 {"csrf": old_form_field(ctx, kind, path.rsplit("/", 1)[1])}]
        for fields in wrong:
            response = await client.post(path, data={**fields, field: "0891234567"})
            assert response.status == 403, (kind, fields)
            assert "Formular abgelaufen" in await response.text()
    assert snapshot(ctx, ticket["id"]) == before


# -- ticket page -----------------------------------------------------------------------------


async def test_ticket_page_shows_state_deadline_and_public_thread_only(ctx, client, ticket):
    """The ticket page shows status, priority, deadline in Berlin time and no internal notes."""
    tq.update(ctx.store, ticket["id"], first_response_due="2026-11-25T09:00:00+00:00",
              priority="low")
    for direction in ("note", "auto"):
        tq.add_message(ctx.store, {"ticket_id": ticket["id"], "direction": direction,
                                   "body": f"GEHEIM {direction}", "created_at": "2026-11-24"})
    tq.add_message(ctx.store, {"ticket_id": ticket["id"], "direction": "out",
                               "from_addr": "agent1@example.com", "body": "Wir schauen nach.",
                               "created_at": "2026-11-24T13:00:00+00:00"})
    html = await page(client, links(ctx)["ticket"])
    assert "Mittwoch, 25.11.2026, 10:00 Uhr" in html
    assert "<dd>neu</dd>" in html and "<dd>niedrig</dd>" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert "Wir schauen nach." in html and "Example Support" in html
    assert "GEHEIM" not in html and "agent1@example.com" not in html
    assert 'href="../escalate/' in html and "fehler.png" in html


async def test_quoted_history_is_folded_away_on_the_page(ctx, client, ticket):
    """A follow-up shows its new words; the quoted history stays behind "whole message"."""
    tq.add_message(ctx.store, {"ticket_id": ticket["id"], "direction": "in",
                               "body": "Neu: Version 4.2.1\n\nAm 24.11.2026 um 10:00 schrieb "
                                       "Support:\n> Alter Text im Zitat",
                               "created_at": "2026-11-24T13:00:00+00:00"})
    html = await page(client, links(ctx)["ticket"])
    shown, _, folded = html.partition("<details>")
    assert "Neu: Version 4.2.1" in shown and "Alter Text im Zitat" not in shown
    assert "Ganze Nachricht anzeigen" in folded and "Alter Text im Zitat" in folded


async def test_ticket_page_never_shows_another_ticket(ctx, client, ticket):
    """My ticket link shows my ticket only, even when other tickets exist."""
    other = file_ticket(ctx, customer_mail(subject="Fremdes Anliegen", body="Nicht für Sie\n",
                                           sender="otto@other.example"))
    html = await page(client, links(ctx)["ticket"])
    assert ticket["number"] in html
    assert other["number"] not in html and "Fremdes" not in html and "otto@" not in html


async def test_reply_from_the_page_reopens_the_ticket_and_shows_in_thread(ctx, client, ticket):
    """Replying on the page adds my message, reopens a waiting ticket and tells the agents."""
    tq.update(ctx.store, ticket["id"], status="waiting")
    path = links(ctx)["ticket"]
    form = {"csrf": await csrf_of(client, path), "text": "Neustart hat nicht geholfen."}
    response = await client.post(path, data=form, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == path.rsplit("/", 1)[1]
    html = await page(client, path)
    assert "Neustart hat nicht geholfen." in html
    assert tq.by_id(ctx.store, ticket["id"])["status"] == "open"
    assert any(e["kind"] == "customer_reply" and e["data"].get("via") == "web"
               for e in tq.events(ctx.store, ticket["id"]))
    assert any("Neustart" in m.get_body(("plain",)).get_content()
               for m in outbox_mails(ctx, "agent_followup"))


async def test_empty_reply_is_refused_with_a_hint(ctx, client, ticket):
    """Sending an empty reply shows a hint and adds nothing."""
    path = links(ctx)["ticket"]
    before = snapshot(ctx, ticket["id"])
    response = await client.post(path, data={"csrf": await csrf_of(client, path), "text": "  "})
    assert response.status == 400
    assert "Bitte schreiben Sie eine Nachricht." in await response.text()
    assert snapshot(ctx, ticket["id"]) == before


async def test_oversized_form_is_refused(ctx, client, ticket):
    """A form bigger than the configured limit gets 413 and changes nothing."""
    path = links(ctx)["ticket"]
    before = snapshot(ctx, ticket["id"])
    response = await client.post(path, data={"csrf": await csrf_of(client, path),
                                             "text": "x" * 10000})
    assert response.status == 413
    assert "Zu viele Daten" in await response.text()
    assert snapshot(ctx, ticket["id"]) == before


async def test_closed_ticket_page_is_read_only(ctx, client, ticket):
    """A closed ticket's page still shows the thread but offers no reply or escalation."""
    path = links(ctx)["ticket"]
    csrf = await csrf_of(client, path)
    tq.update(ctx.store, ticket["id"], status="closed")
    html = await page(client, path)
    assert "Dieses Ticket ist geschlossen" in html
    assert "<form" not in html and "../escalate/" not in html
    response = await client.post(path, data={"csrf": csrf, "text": "Noch eine Frage"})
    assert response.status == 410
    assert tq.by_id(ctx.store, ticket["id"])["status"] == "closed"


# -- downloads -------------------------------------------------------------------------------


def attachment_paths(html: str, base: str) -> dict[str, str]:
    """Download paths on a ticket page by file name."""
    prefix = base.rsplit("/", 1)[0]
    return {name: f"{prefix}/{href}"
            for href, name in re.findall(r'<a href="([^"]+/a/\d+)" download>([^<]+)</a>', html)}


async def test_attachments_download_with_their_name_and_without_sniffing(ctx, client, ticket):
    """Clicking an attachment downloads it under its name; HTML files never render."""
    path = links(ctx)["ticket"]
    files = attachment_paths(await page(client, path), path)
    assert set(files) == {"fehler.png", "bericht.html"}
    png = await client.get(files["fehler.png"])
    assert png.status == 200 and await png.read() == PNG
    assert png.headers["Content-Type"] == "image/png"
    assert png.headers["Content-Disposition"].startswith('attachment; filename="fehler.png"')
    html = await client.get(files["bericht.html"])
    assert html.headers["Content-Type"].startswith("text/html")
    assert html.headers["Content-Disposition"].startswith("attachment;")
    assert html.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in html.headers["Content-Security-Policy"]


async def test_attachments_of_notes_and_other_tickets_are_not_served(ctx, client, ticket):
    """Guessing attachment numbers reveals neither internal files nor other tickets' files."""
    other = file_ticket(ctx, customer_mail(subject="Fremd", sender="otto@other.example",
                                           attachments=(("fremd.txt", "text/plain", b"x"),)))
    note = tq.add_message(ctx.store, {"ticket_id": ticket["id"], "direction": "note",
                                      "body": "intern", "created_at": "2026-11-24"})
    internal = tq.add_attachment(ctx.store, {"message_row": note, "filename": "intern.txt",
                                             "content_type": "text/plain", "size": 1,
                                             "sha256": "0" * 64})
    foreign_id = wq.public_messages(ctx.store, other["id"])[0]["attachments"][0]["id"]
    base = links(ctx)["ticket"]
    for attachment_id in (internal, foreign_id, 99999):
        body = await page(client, f"{base}/a/{attachment_id}", 404)
        assert "Nicht gefunden" in body


# -- headers and errors ----------------------------------------------------------------------


async def test_every_response_carries_security_headers(ctx, client, ticket):
    """Pages and error pages (also where operators' endpoints are not) carry strict headers."""
    paths = [links(ctx)["escalate"], links(ctx)["ticket"], "/t/nonsense", "/nowhere",
             "/healthz", "/metrics"]
    for path in paths:
        response = await client.get(path)
        headers = response.headers
        csp = headers["Content-Security-Policy"]
        for part in ("default-src 'none'", "form-action 'self'", "frame-ancestors 'none'"):
            assert part in csp, (path, csp)
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Cache-Control"] == "no-store"


async def test_inline_stylesheet_is_allowed_by_its_hash(ctx, client, ticket):
    """The page's only stylesheet is exactly the one the CSP allows, so it is not blocked."""
    response = await client.get(links(ctx)["ticket"])
    style = re.search(r"<style>(.*?)</style>", await response.text(), re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in response.headers["Content-Security-Policy"]


async def test_unknown_pages_and_methods_get_error_pages(client):
    """Unknown addresses get a 404 page, wrong methods a 405 page."""
    assert "Nicht gefunden" in await page(client, "/admin", 404)
    response = await client.put("/t/whatever", data="x")
    assert response.status == 405
    assert "Nicht möglich" in await response.text()
