"""Customer forms over real HTTP: each form is taken once, and posts come at a bounded rate.

Each test serves the real aiohttp application on loopback (aiohttp's TestServer) with a
real config, store and pipeline in tmp_path.  Two servers with contexts of their own over
one database stand for two mailbot processes; clients on 127.0.0.2 and 127.0.0.3 stand for
other customers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from webutil import (
    context_for,
    customer_mail,
    file_ticket,
    form_field,
    links_in,
    outbox_mails,
    path_of,
    write_config,
)

from mailbot.context import Context
from mailbot.store import forms as fq
from mailbot.store import tickets as tq
from mailbot.web.server import make_app
from mailbot.web.throttle import Throttle


@dataclass
class Site:
    """One mailbot web process under test: its context and an HTTP client of its server."""

    ctx: Context
    client: TestClient
    server: TestServer
    others: list[TestClient] = field(default_factory=list)

    async def client_from(self, address: str) -> TestClient:
        """A client of the same server that connects from another loopback address (closed,
        with the server, when the test ends)."""
        connector = aiohttp.TCPConnector(local_addr=(address, 0))
        self.others.append(TestClient(self.server, connector=connector))
        await self.others[-1].start_server()
        return self.others[-1]


@pytest.fixture
async def open_site(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Site]]]:
    """``await open_site(web=...)``: a web process on this test's config; every call after the
    first opens another process over the same database (its ``web`` lines are ignored)."""
    made: list[Site] = []

    async def open_one(web: str = "") -> Site:
        path = tmp_path / "mailbot.toml"
        if not path.exists():
            write_config(tmp_path, web_port=8080, web=web)
        ctx = context_for(path)
        server = TestServer(make_app(ctx))
        client = TestClient(server)
        await client.start_server()
        made.append(Site(ctx, client, server))
        return made[-1]

    yield open_one
    for site in made:
        for client in (*site.others, site.client):
            await client.close()
        site.ctx.store.close()


def links_of(ctx: Context, number: str) -> dict[str, str]:
    """The escalation and ticket paths from the acknowledgement of ticket ``number``."""
    ack = next(m for m in outbox_mails(ctx, "acknowledgement") if number in m["Subject"])
    return {kind: path_of(url) for kind, url in links_in(ack).items()}


async def form_of(client: TestClient, path: str) -> str:
    """The CSRF field of the form on the page at ``path``, as a browser would load it."""
    response = await client.get(path)
    assert response.status == 200, await response.text()
    return form_field(await response.text())


def replies(ctx: Context, ticket: dict, text: str) -> int:
    """How many messages of the ticket carry ``text``."""
    return sum(text in m["body"] for m in tq.messages(ctx.store, ticket["id"]))


async def post_reply(client: TestClient, path: str, csrf: str, text: str) -> tuple[int, str]:
    """Send the reply form; the status and page of the answer (a redirect is not followed)."""
    response = await client.post(path, data={"csrf": csrf, "text": text},
                                 allow_redirects=False)
    return response.status, await response.text()


# -- single use --------------------------------------------------------------------------------


async def test_a_reply_sent_twice_is_added_once_and_the_second_answer_says_already_sent(
        open_site):
    """Sending the reply form again (double click, reload, back button) adds nothing and says
    so, in German; a form refused for an empty text can still be sent once corrected."""
    site = await open_site()
    ticket = file_ticket(site.ctx)
    path = links_of(site.ctx, ticket["number"])["ticket"]
    csrf = await form_of(site.client, path)
    assert (await post_reply(site.client, path, csrf, "  "))[0] == 400
    assert (await post_reply(site.client, path, csrf, "Drucker geht wieder nicht."))[0] == 303
    told = len(outbox_mails(site.ctx, "agent_followup"))
    status, html = await post_reply(site.client, path, csrf, "Drucker geht wieder nicht.")
    assert status == 409
    assert "Bereits gesendet" in html and "nicht noch einmal hinzugefügt" in html
    assert f'href="{path.rsplit("/", 1)[1]}"' in html  # back to the ticket page
    assert replies(site.ctx, ticket, "Drucker geht wieder nicht.") == 1
    assert len(outbox_mails(site.ctx, "agent_followup")) == told > 0


async def test_already_sent_speaks_english_for_english_tickets(open_site):
    """A customer whose ticket is in English reads "Already sent" in English."""
    site = await open_site()
    ticket = file_ticket(site.ctx)
    tq.update(site.ctx.store, ticket["id"], language="en")
    path = links_of(site.ctx, ticket["number"])["ticket"]
    csrf = await form_of(site.client, path)
    assert (await post_reply(site.client, path, csrf, "Still broken."))[0] == 303
    status, html = await post_reply(site.client, path, csrf, "Still broken.")
    assert status == 409
    assert "Already sent" in html and 'lang="en"' in html and "Back to the ticket" in html


async def test_the_same_reply_sent_to_two_processes_at_once_is_added_once(open_site):
    """Two mailbot processes receiving the same form at the same moment add it once."""
    first, second = await open_site(), await open_site()
    ticket = file_ticket(first.ctx)
    path = links_of(first.ctx, ticket["number"])["ticket"]
    csrf = await form_of(first.client, path)
    answers = await asyncio.gather(post_reply(first.client, path, csrf, "Gleichzeitig"),
                                   post_reply(second.client, path, csrf, "Gleichzeitig"))
    assert sorted(status for status, _ in answers) == [303, 409]
    assert replies(first.ctx, ticket, "Gleichzeitig") == 1


async def test_the_same_escalation_sent_to_two_processes_at_once_escalates_once(open_site):
    """The escalation form sent twice at once escalates once: one event, one mail to each
    agent, one confirmation; both answers show the escalated ticket."""
    first, second = await open_site(), await open_site()
    ticket = file_ticket(first.ctx)
    path = links_of(first.ctx, ticket["number"])["escalate"]
    form = {"csrf": await form_of(first.client, path), "phone": "+49 89 555 0100"}
    answers = await asyncio.gather(first.client.post(path, data=form),
                                   second.client.post(path, data=form))
    pages = sorted([await answer.text() for answer in answers], key=len)
    assert [answer.status for answer in answers] == [200, 200]
    assert sum("Rückruf-Service aktiviert" in html for html in pages) == 1
    assert sum("Bereits eskaliert" in html for html in pages) == 1
    events = [e["kind"] for e in tq.events(first.ctx.store, ticket["id"])]
    assert events.count("escalated") == 1
    assert len(outbox_mails(first.ctx, "agent_escalation")) == 2
    assert len(outbox_mails(first.ctx, "escalation_confirmed")) == 1


def test_used_forms_are_forgotten_once_their_field_expired(tmp_path):
    """The record of sent forms does not grow forever: a form whose field expired (and so is
    refused by its signature anyway) is deleted when the next form is sent."""
    ctx = context_for(write_config(tmp_path, web_port=8080))
    now = datetime.now(UTC)
    assert fq.first_use(ctx.store, "old", now + timedelta(hours=1), now)
    assert not fq.first_use(ctx.store, "old", now + timedelta(hours=1), now)
    assert fq.first_use(ctx.store, "new", now + timedelta(hours=3), now + timedelta(hours=2))
    kept = ctx.store.rows("SELECT form_id FROM web_forms_used")
    ctx.store.close()
    assert kept == [{"form_id": "new"}]


# -- rate limits -------------------------------------------------------------------------------


async def test_one_client_posting_too_often_is_refused_with_429(open_site):
    """One client address may post a few forms a minute, whatever the ticket; the next gets
    a 429 page (German, with Retry-After) and changes nothing; other customers go on."""
    site = await open_site(web="max_posts_per_client_per_minute = 3\n"
                               "max_posts_per_ticket_per_minute = 0\n")
    tickets = [file_ticket(site.ctx, customer_mail(subject=f"Anfrage {n}",
                                                   sender=f"kunde{n}@kunde.example"))
               for n in range(4)]
    paths = [links_of(site.ctx, t["number"])["ticket"] for t in tickets]
    forms = [await form_of(site.client, path) for path in paths]
    for path, csrf in zip(paths[:3], forms[:3], strict=True):
        assert (await post_reply(site.client, path, csrf, "Bitte melden"))[0] == 303
    refused = await site.client.post(paths[3], data={"csrf": forms[3], "text": "Bitte melden"})
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "60"
    assert "Zu viele Eingaben" in await refused.text()
    assert replies(site.ctx, tickets[3], "Bitte melden") == 0
    neighbour = await site.client_from("127.0.0.2")
    assert (await post_reply(neighbour, paths[3], forms[3], "Bitte melden"))[0] == 303
    assert replies(site.ctx, tickets[3], "Bitte melden") == 1


async def test_one_ticket_posted_to_too_often_is_refused_from_any_address(open_site):
    """One ticket takes a few posts a minute, from whatever addresses they come (also the
    escalation form counts); a post to another ticket is still taken."""
    site = await open_site(web="max_posts_per_client_per_minute = 0\n"
                               "max_posts_per_ticket_per_minute = 2\n")
    busy = file_ticket(site.ctx)
    calm = file_ticket(site.ctx, customer_mail(subject="Andere Frage",
                                               sender="otto@kunde.example"))
    busy_links = links_of(site.ctx, busy["number"])
    calm_path = links_of(site.ctx, calm["number"])["ticket"]
    clients = [site.client, await site.client_from("127.0.0.2"),
               await site.client_from("127.0.0.3")]
    path = busy_links["ticket"]
    assert (await post_reply(clients[0], path, await form_of(clients[0], path), "Eins"))[0] \
        == 303
    escalation = await clients[1].post(busy_links["escalate"], data={
        "csrf": await form_of(clients[1], busy_links["escalate"]), "phone": "089 5550100"})
    assert escalation.status == 200
    status, html = await post_reply(clients[2], path, await form_of(clients[2], path), "Drei")
    assert status == 429 and "Zu viele Eingaben" in html
    assert replies(site.ctx, busy, "Drei") == 0
    assert (await post_reply(clients[2], calm_path, await form_of(clients[2], calm_path),
                             "Andere"))[0] == 303


def test_the_throttle_counts_a_sliding_minute_and_only_what_it_admitted():
    """A key at its limit is refused until its oldest admitted post is a minute old; refused
    posts do not count; each key of a post is checked, and none counted when one is full."""
    now = [1000.0]
    throttle = Throttle(window=60, clock=lambda: now[0])
    assert throttle.admit([("a", 2)])
    now[0] += 30
    assert throttle.admit([("a", 2)])
    assert not throttle.admit([("a", 2)])
    assert not throttle.admit([("b", 5), ("a", 2)])
    assert throttle.admit([("b", 1)])  # b counted nothing for the refused post above
    now[0] += 30.5
    assert throttle.admit([("a", 2)])
    assert not throttle.admit([("a", 2)])
    assert all(throttle.admit([("c", 0)]) for _ in range(100))  # 0: no limit
