"""Rendering the customer pages: templates, the inlined stylesheet, security headers, errors.

Pages are jinja2 templates ``templates/<lang>/web/<name>.html`` (autoescaped, strict
variables) sharing the layout ``de/web/base.html``.  The one stylesheet is inlined
and allowed by its hash in the Content-Security-Policy, so pages load nothing else
and work at any depth below any base path.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import jinja2
from aiohttp import web
from markupsafe import Markup

from mailbot.outbound.wording import supported_language

STYLE = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#1d232a;background:#f3f5f7}
main{max-width:42rem;margin:0 auto;padding:1rem}
header{background:#1f4e79;color:#fff;padding:.75rem 1rem}
header p{max-width:42rem;margin:0 auto;font-weight:600}
h1{font-size:1.4rem;margin:.5rem 0 1rem}
h2{font-size:1.15rem;margin:1.5rem 0 .5rem}
section,article{background:#fff;border:1px solid #d6dce2;border-radius:6px;padding:1rem;
margin:0 0 1rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
article.out{border-left:4px solid #1f4e79}article.in{border-left:4px solid #8a9199}
section>p{margin:0}
.meta{color:#59626b;font-size:.9rem;margin:0 0 .5rem}
.body{white-space:pre-wrap;overflow-wrap:anywhere;margin:0;font:inherit}
.notice{background:#fff7e0;border-color:#e8c766}
.error{background:#fdecea;border-color:#e3a39b}
.ok{background:#eaf6ec;border-color:#9ccaa5}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
input[type=tel],textarea{width:100%;font:inherit;padding:.5rem;border:1px solid #8a9199;
border-radius:4px}
textarea{min-height:8rem}
button,a.button{display:inline-block;margin-top:.75rem;padding:.6rem 1.2rem;font:inherit;
font-weight:600;color:#fff;background:#1f4e79;border:0;border-radius:4px;
text-decoration:none;cursor:pointer}
a.button.urgent,button.urgent{background:#b3261e}
ul.files{margin:.5rem 0 0;padding-left:1.2rem}
"""


class PageError(Exception):
    """Stop handling a request and show the error page ``kind`` with ``status``."""

    def __init__(self, status: int, kind: str, language: str = "") -> None:
        super().__init__(f"{status} {kind}")
        self.status = status
        self.kind = kind
        self.language = language


def style_hash() -> str:
    """The CSP source expression that allows exactly the inlined stylesheet."""
    digest = hashlib.sha256(STYLE.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def security_headers(download: bool = False) -> dict[str, str]:
    """Headers every response carries: a strict CSP, no framing, no sniffing, no caching."""
    policy = (f"default-src 'none'; style-src {style_hash()}; form-action 'self'; "
              "frame-ancestors 'none'; base-uri 'none'")
    return {"Content-Security-Policy": policy + ("; sandbox" if download else ""),
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


class Pages:
    """Renders the customer pages in the ticket's language."""

    def __init__(self, templates_dir: Path, default_language: str, site_name: str) -> None:
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir)),
                                      autoescape=True, undefined=jinja2.StrictUndefined,
                                      trim_blocks=True, lstrip_blocks=True)
        self.default_language = default_language
        self.site_name = site_name

    def language(self, wanted: str | None) -> str:
        """``wanted`` if we have pages in it, else the configured language."""
        return supported_language(wanted, self.default_language)

    def render(self, name: str, language: str | None, values: dict,
               status: int = 200) -> web.Response:
        """An HTML response from template ``<lang>/web/<name>.html``."""
        lang = self.language(language)
        template = self.env.get_template(f"{lang}/web/{name}.html")
        html = template.render(**values, lang=lang, site_name=self.site_name,
                               style=Markup(STYLE))  # noqa: S704
        return web.Response(text=html, status=status, content_type="text/html",
                            charset="utf-8")

    def error(self, status: int, kind: str, language: str | None = None) -> web.Response:
        """The error page: the same neutral text for every way a link can be wrong."""
        return self.render("error", language, {"kind": kind, "status": status}, status)


@web.middleware
async def headers_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Put the security headers on every response (a handler's own values win)."""
    response = await handler(request)
    for name, value in security_headers().items():
        response.headers.setdefault(name, value)
    return response
