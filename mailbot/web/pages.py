"""The customer pages: the escalation link, the ticket page, attachment downloads.

Every page is reached through a signed link token bound to one ticket and one
purpose.  GET never changes anything (mail scanners open links); every POST
carries a CSRF field that is taken once (:mod:`mailbot.web.forms`) and is counted
against its client address and its ticket (:mod:`mailbot.web.throttle`).  Database
work runs in a worker thread, off the event loop.  Links between pages are relative,
so the pages work below any base path.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDictProxy

from mailbot.outbound.wording import moment
from mailbot.reading import quotes
from mailbot.store import directory as dq
from mailbot.store import public as wq
from mailbot.store import tickets as tq
from mailbot.tickets import escalation, filing
from mailbot.web.render import PageError, security_headers
from mailbot.web.state import STATE, WebState, open_ticket, ticket_number

MAX_REPLY_CHARS = 20000
CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
UNSAFE_FILENAME = re.compile(r'[^A-Za-z0-9 ._()+-]')


async def escalate_page(request: web.Request) -> web.Response:
    """GET /escalate/<token>: what escalating means, the phone field and the confirm button."""
    state = request.app[STATE]
    return await asyncio.to_thread(show_escalation, state, request.match_info["token"])


async def escalate_submit(request: web.Request) -> web.Response:
    """POST /escalate/<token>: escalate the ticket once, then show the result."""
    state = request.app[STATE]
    admit_post(state, request, "escalate")
    form = await request.post()
    return await asyncio.to_thread(submit_escalation, state, request.match_info["token"], form)


async def ticket_page(request: web.Request) -> web.Response:
    """GET /t/<token>: the ticket's state, public thread, reply form and escalation button."""
    state = request.app[STATE]
    return await asyncio.to_thread(show_ticket, state, request.match_info["token"])


async def ticket_submit(request: web.Request) -> web.Response:
    """POST /t/<token>: add the customer's reply, then redirect back to the page."""
    state = request.app[STATE]
    admit_post(state, request, "ticket")
    form = await request.post()
    return await asyncio.to_thread(submit_reply, state, request.match_info["token"], form)


async def download(request: web.Request) -> web.StreamResponse:
    """GET /t/<token>/a/<id>: one attachment of the ticket's public thread, as a download,
    sent a chunk at a time from wherever it is kept (a file, or a PostgreSQL store)."""
    state = request.app[STATE]
    row, size, chunks = await asyncio.to_thread(
        find_attachment, state, request.match_info["token"], int(request.match_info["attachment"]))
    response = web.StreamResponse(headers=download_headers(row))
    response.content_length = size
    await response.prepare(request)
    if request.method != "HEAD":
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            await response.write(chunk)
    await response.write_eof()
    return response


def admit_post(state: WebState, request: web.Request, purpose: str) -> None:
    """Raise PageError 429 when this client address or this ticket posted too often.

    Checked before the form is read.  A post with a bad link counts for its client only
    (and gets its own error page afterwards).
    """
    config = state.ctx.config.web
    limits = [(("client", request.remote), config.max_posts_per_client_per_minute)]
    with contextlib.suppress(PageError):
        number = ticket_number(state.ctx, purpose, request.match_info["token"])
        limits.append((("ticket", number), config.max_posts_per_ticket_per_minute))
    if not state.throttle.admit(limits):
        raise PageError(429, "busy")


def show_escalation(state: WebState, token: str) -> web.Response:
    """The escalation page, or "already escalated" when it was done before."""
    ticket = _escalatable(state, token)
    if ticket["escalated_at"]:
        return _escalated(state, ticket, already=True)
    phone = (dq.contact_by_id(state.ctx.store, ticket["contact_id"]) or {}).get("phone", "")
    return _escalation_form(state, ticket, token, phone, "")


def submit_escalation(state: WebState, token: str, form: MultiDictProxy) -> web.Response:
    """Check the form, then escalate; a second escalation, or the same form sent again,
    changes nothing and says "already escalated"."""
    ticket = _escalatable(state, token)
    sent = state.forms.check(form.get("csrf"), "escalate", token)
    if ticket["escalated_at"]:
        return _escalated(state, ticket, already=True)
    typed = str(form.get("phone", ""))[:100]
    try:
        phone = escalation.clean_phone(typed)
    except escalation.InvalidPhone:
        return _escalation_form(state, ticket, token, typed, "phone", status=400)
    ctx = state.ctx
    with ctx.store.transaction():
        result = escalation.escalate(ctx, ticket["number"], phone) \
            if sent.first_time(ctx.store) else None
    ctx.on_outbox()  # the escalation's mails are committed only now
    if result is None:
        return _escalated(state, tq.by_id(ctx.store, ticket["id"]), already=True)
    if result.outcome in (escalation.UNKNOWN, escalation.CLOSED):
        raise PageError(410, "gone", ticket["language"])
    return _escalated(state, result.ticket, already=result.outcome == escalation.ALREADY)


def show_ticket(state: WebState, token: str, text: str = "", error: str = "",
                status: int = 200) -> web.Response:
    """The ticket page (read-only once the ticket is closed)."""
    ticket = open_ticket(state.ctx, "ticket", token)
    return state.pages.render("ticket", ticket["language"],
                              ticket_values(state, ticket, token, text, error), status)


def submit_reply(state: WebState, token: str, form: MultiDictProxy) -> web.Response:
    """Add the customer's text to the ticket like a follow-up mail; redirect to the page.

    The same form sent again adds nothing and gets the "already sent" page (409).
    """
    ticket = open_ticket(state.ctx, "ticket", token)
    sent = state.forms.check(form.get("csrf"), "ticket", token)
    text = str(form.get("text", "")).strip()
    if not text or len(text) > MAX_REPLY_CHARS:
        error = "empty" if not text else "long"
        return show_ticket(state, token, text[:MAX_REPLY_CHARS], error, status=400)
    ctx = state.ctx
    with ctx.store.transaction():
        fresh = tq.by_id(ctx.store, ticket["id"])
        if fresh["status"] == "closed":
            raise PageError(410, "gone", ticket["language"])
        first = sent.first_time(ctx.store)
        if first:
            filing.append_customer_text(ctx, fresh, text, "web", ctx.clock())
    if not first:
        return state.pages.render("sent", ticket["language"],
                                  {"ticket": ticket, "token": quote(token, safe="")}, 409)
    ctx.on_outbox()
    return web.Response(status=303, headers={"Location": quote(token, safe="")})


def find_attachment(state: WebState, token: str,
                    attachment_id: int) -> tuple[dict, int, Iterator[bytes]]:
    """The row of an attachment of this ticket's public thread, the size of its file and
    its chunks (read one by one as they are sent: a big file is never whole in memory);
    404 otherwise."""
    ticket = open_ticket(state.ctx, "ticket", token)
    row = wq.public_attachment(state.ctx.store, ticket["id"], attachment_id)
    if row is None:
        raise PageError(404, "missing", ticket["language"])
    try:
        return row, state.ctx.files.size(row["sha256"]), state.ctx.files.chunks(row["sha256"])
    except (ValueError, FileNotFoundError) as exc:
        raise PageError(404, "missing", ticket["language"]) from exc


def download_headers(row: dict) -> dict[str, str]:
    """Force a download under the stored name, with a checked type and no sniffing."""
    content_type = row["content_type"].lower().strip()
    if not CONTENT_TYPE.fullmatch(content_type):
        content_type = "application/octet-stream"
    name = row["filename"] or "attachment"
    fallback = UNSAFE_FILENAME.sub("_", name) or "attachment"
    disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
    return {**security_headers(download=True), "Content-Type": content_type,
            "Content-Disposition": disposition}


def ticket_values(state: WebState, ticket: dict, token: str, text: str, error: str) -> dict:
    """What the ticket page shows."""
    ctx = state.ctx
    language = state.pages.language(ticket["language"])
    zone = ctx.config.timezone
    escalate_token = ctx.signer.link_token("escalate", ticket["number"])
    return {
        "ticket": ticket, "token": quote(token, safe=""), "text": text, "error": error,
        "closed": ticket["status"] == "closed",
        "deadline_text": moment(ticket["first_response_due"], zone, language),
        "escalated_text": moment(ticket["escalated_at"], zone, language),
        "escalate_href": f"../escalate/{quote(escalate_token, safe='')}",
        "messages": [{**m, "when": moment(m["created_at"], zone, language),
                      "short": _without_history(m)}
                     for m in wq.public_messages(ctx.store, ticket["id"])],
        "support_name": ctx.config.support.name,
        "csrf": state.forms.field("ticket", token),
    }


def _escalatable(state: WebState, token: str) -> dict:
    ticket = open_ticket(state.ctx, "escalate", token)
    if ticket["status"] == "closed":
        raise PageError(410, "gone", ticket["language"])
    return ticket


def _escalation_form(state: WebState, ticket: dict, token: str, phone: str, error: str,
                     status: int = 200) -> web.Response:
    language = state.pages.language(ticket["language"])
    return state.pages.render("escalate", language, {
        "ticket": ticket, "phone": phone, "error": error,
        "notice": state.ctx.config.web.escalation_notice(language),
        "csrf": state.forms.field("escalate", token)}, status)


def _escalated(state: WebState, ticket: dict, already: bool) -> web.Response:
    language = state.pages.language(ticket["language"])
    zone = state.ctx.config.timezone
    return state.pages.render("escalated", language, {
        "ticket": ticket, "already": already,
        "escalated_text": moment(ticket["escalated_at"], zone, language),
        "deadline_text": moment(ticket["first_response_due"], zone, language)})


def _without_history(message: dict) -> str:
    """A customer mail's new words when it quotes earlier mails, else ``""``."""
    if message["direction"] != "in":
        return ""
    return quotes.new_words(message["body"])
