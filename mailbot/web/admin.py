"""The operators' listener ([admin]): /healthz and /metrics on a port of their own.

Kept apart from the customer pages, so what mailbot knows of its sources, errors and
counts is never served where customers (or the internet) reach it; the documents name
no file paths either (:func:`mailbot.status.health.report`).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mailbot.context import Context
from mailbot.status.health import report
from mailbot.web.render import headers_middleware

log = logging.getLogger(__name__)

CONTEXT = web.AppKey("context", Context)


def make_admin_app(ctx: Context) -> web.Application:
    """The operators' application over one context: its health board and metrics."""
    app = web.Application(middlewares=[headers_middleware])
    app[CONTEXT] = ctx
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_admin(ctx: Context) -> web.AppRunner:
    """Serve the operators' app on ``[admin] host`` and ``port``; the caller cleans it up.

    A port that cannot be bound raises OSError, with nothing left open.
    """
    admin = ctx.config.admin
    runner = web.AppRunner(make_admin_app(ctx), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, admin.host, admin.port).start()
    except OSError:
        await runner.cleanup()
        raise
    log.info("admin listener (/healthz, /metrics) on %s:%d", admin.host, admin.port)
    return runner


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 when the database is writable and the sources are fine, else 503."""
    ctx = request.app[CONTEXT]
    document = await asyncio.to_thread(report, ctx.store, ctx.health,
                                       ctx.config.web.max_source_failures)
    return web.json_response(document, status=200 if document["status"] == "ok" else 503)


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: every metric in the Prometheus text format."""
    body = await asyncio.to_thread(request.app[CONTEXT].metrics.render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
