"""What the request handlers share, and the ticket a customer's link opens."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from mailbot.context import Context
from mailbot.outbound.tokens import TokenError, TokenExpired
from mailbot.store import tickets as tq
from mailbot.web.forms import Forms
from mailbot.web.render import PageError, Pages
from mailbot.web.throttle import Throttle


@dataclass(frozen=True)
class WebState:
    """What the request handlers share, stored in the application under :data:`STATE`."""

    ctx: Context
    pages: Pages
    forms: Forms
    throttle: Throttle


STATE = web.AppKey("mailbot", WebState)


def open_ticket(ctx: Context, purpose: str, token: str) -> dict:
    """The ticket a link token grants ``purpose`` on; PageError 404/410 otherwise."""
    number = ticket_number(ctx, purpose, token)
    ticket = tq.by_number(ctx.store, number)
    if ticket is None:
        raise PageError(404, "invalid")
    return ticket


def ticket_number(ctx: Context, purpose: str, token: str) -> str:
    """The ticket number a link token grants ``purpose`` on; PageError 404/410 otherwise."""
    try:
        return ctx.signer.read_link_token(purpose, token)
    except TokenExpired as exc:
        raise PageError(410, "gone") from exc
    except TokenError as exc:
        raise PageError(404, "invalid") from exc
