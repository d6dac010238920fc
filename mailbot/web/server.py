"""The small HTTP server: escalation link, customer ticket page, /healthz and /metrics.

It runs in the daemon's event loop (aiohttp ``AppRunner`` + ``TCPSite``).  Every
response carries strict security headers; every error becomes a neutral page that
tells the customer what to do and an attacker nothing.
"""

from __future__ import annotations

import asyncio
import logging
from types import MappingProxyType

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mailbot.context import Context
from mailbot.status.health import report
from mailbot.web import pages
from mailbot.web.forms import Forms
from mailbot.web.render import PageError, Pages, security_headers
from mailbot.web.state import STATE, WebState

log = logging.getLogger(__name__)

ERROR_KINDS = MappingProxyType({403: "form", 404: "notfound", 405: "method", 410: "gone",
                                413: "toolarge"})


def make_app(ctx: Context) -> web.Application:
    """The web application over one context (its health board and metrics included)."""
    config = ctx.config
    app = web.Application(client_max_size=config.web.max_body_bytes,
                          middlewares=[headers_middleware, error_middleware])
    app[STATE] = WebState(
        ctx=ctx, pages=Pages(config.templates_dir, config.service.language, config.support.name),
        forms=Forms(ctx.signer.secret, config.web.form_max_age_seconds))
    add_routes(app)
    return app


def add_routes(app: web.Application) -> None:
    """The URL map: customer pages under the token, operator endpoints at the top."""
    app.router.add_get("/escalate/{token}", pages.escalate_page)
    app.router.add_post("/escalate/{token}", pages.escalate_submit)
    app.router.add_get("/t/{token}", pages.ticket_page)
    app.router.add_post("/t/{token}", pages.ticket_submit)
    app.router.add_get(r"/t/{token}/a/{attachment:\d{1,18}}", pages.download)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)


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
async def headers_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Put the security headers on every response (a handler's own values win)."""
    response = await handler(request)
    for name, value in security_headers().items():
        response.headers.setdefault(name, value)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Turn every failure into the neutral error page with the right status."""
    pages = request.app[STATE].pages
    try:
        return await handler(request)
    except PageError as exc:
        return pages.error(exc.status, exc.kind, exc.language)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return pages.error(exc.status, ERROR_KINDS.get(exc.status, "error"))
    except Exception:
        log.exception("web request %s %s failed", request.method, request.path)
        return pages.error(500, "error")


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 when the database is writable and the sources are fine, else 503."""
    ctx = request.app[STATE].ctx
    document = await asyncio.to_thread(report, ctx.store, ctx.health,
                                       ctx.config.web.max_source_failures)
    return web.json_response(document, status=200 if document["status"] == "ok" else 503)


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: every metric in the Prometheus text format."""
    body = await asyncio.to_thread(request.app[STATE].ctx.metrics.render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
