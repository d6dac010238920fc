"""The customer-facing HTTP server: the escalation link and the customer ticket page.

It runs in the daemon's event loop (aiohttp ``AppRunner`` + ``TCPSite``).  Every
response carries strict security headers; every error becomes a neutral page that
tells the customer what to do and an attacker nothing.  The operators' endpoints
live on a listener of their own (:mod:`mailbot.web.admin`).
"""

from __future__ import annotations

import logging
from types import MappingProxyType

from aiohttp import web

from mailbot.context import Context
from mailbot.web import pages
from mailbot.web.forms import Forms
from mailbot.web.render import PageError, Pages, headers_middleware
from mailbot.web.state import STATE, WebState
from mailbot.web.throttle import WINDOW_SECONDS, Throttle

log = logging.getLogger(__name__)

ERROR_KINDS = MappingProxyType({403: "form", 404: "notfound", 405: "method", 410: "gone",
                                413: "toolarge"})


def make_app(ctx: Context) -> web.Application:
    """The customer web application over one context."""
    config = ctx.config
    app = web.Application(client_max_size=config.web.max_body_bytes,
                          middlewares=[headers_middleware, error_middleware])
    app[STATE] = WebState(
        ctx=ctx, pages=Pages(config.templates_dir, config.service.language, config.support.name),
        forms=Forms(ctx.signer.secret, config.web.form_max_age_seconds), throttle=Throttle())
    add_routes(app)
    return app


def add_routes(app: web.Application) -> None:
    """The URL map: customer pages under the token."""
    app.router.add_get("/escalate/{token}", pages.escalate_page)
    app.router.add_post("/escalate/{token}", pages.escalate_submit)
    app.router.add_get("/t/{token}", pages.ticket_page)
    app.router.add_post("/t/{token}", pages.ticket_submit)
    app.router.add_get(r"/t/{token}/a/{attachment:\d{1,18}}", pages.download)


async def start_web(ctx: Context) -> web.AppRunner:
    """Serve the app on the configured host and port; the caller cleans the runner up."""
    runner = web.AppRunner(make_app(ctx), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, ctx.config.web.host, ctx.config.web.port)
    await site.start()
    log.info("web server on %s:%d, public URL %s", ctx.config.web.host, ctx.config.web.port,
             ctx.config.web.base_url)
    return runner


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Turn every failure into the neutral error page with the right status."""
    pages = request.app[STATE].pages
    try:
        return await handler(request)
    except PageError as exc:
        response = pages.error(exc.status, exc.kind, exc.language)
        if exc.status == 429:
            response.headers["Retry-After"] = str(WINDOW_SECONDS)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return pages.error(exc.status, ERROR_KINDS.get(exc.status, "error"))
    except Exception:
        log.exception("web request %s %s failed", request.method, request.path)
        return pages.error(500, "error")
