"""Browser tests in real headless Chromium: the links in a real acknowledgement mail work.

The web server runs in the test's event loop on a free loopback port; mail goes to
the real SMTP sink; the ticket is checked with the real CLI (`tickets show --json`).
Playwright drives Debian's /usr/bin/chromium; no browser is ever downloaded.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from servers import ReceivedMail, SmtpSink, free_port
from webutil import context_for, customer_mail, file_ticket, links_in, outbox_mails, write_config

from mailbot.context import Context
from mailbot.web.server import start_web

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium driven by Playwright."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install the Debian package chromium")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                    args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
def site_config(tmp_path: Path, smtp_sink: SmtpSink, request) -> Path:
    """A real config: web on a free port, mail relayed to the SMTP sink, two agents."""
    language = getattr(request, "param", "de")
    return write_config(tmp_path, web_port=free_port(), relay_port=smtp_sink.port,
                        language=language)


@pytest.fixture
async def site(site_config: Path) -> AsyncIterator[Context]:
    """The web server of that config, serving in this test's event loop."""
    ctx = context_for(site_config)
    runner = await start_web(ctx)
    yield ctx
    await runner.cleanup()
    ctx.store.close()


@pytest.fixture
def csp_errors() -> list[str]:
    """Console messages in which the browser blocked something by Content-Security-Policy."""
    return []


@pytest.fixture
async def page(browser: Browser, csp_errors: list[str]) -> AsyncIterator[Page]:
    """A fresh browser tab that records Content-Security-Policy complaints."""
    context = await browser.new_context(accept_downloads=True)
    tab = await context.new_page()
    tab.on("console", lambda msg: "Content Security Policy" in msg.text
           and csp_errors.append(msg.text))
    yield tab
    await context.close()


async def mailbot(config: Path, *args: str) -> str:
    """Run the real `mailbot` CLI on the config; its standard output (exit code 0 required)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailbot", "--config", str(config), *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, f"mailbot {' '.join(args)}: {err.decode()}"
    return out.decode()


async def shot(page: Page, tmp_path: Path, name: str) -> None:
    """Save a full-page screenshot under the test's tmp dir."""
    target = tmp_path / f"{name}.png"
    await page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 1000


def to(address: str, subject_part: str):
    """A predicate for sink mails to ``address`` whose subject contains ``subject_part``."""
    def match(mail: ReceivedMail) -> bool:
        return address in mail.rcpt_tos and subject_part in mail.subject
    return match


async def test_escalation_link_from_acknowledgement_escalates_and_alerts_agents(
        site, site_config, smtp_sink, page, csp_errors, tmp_path):
    """On my phone, the escalation link in my acknowledgement requests a call-back for me."""
    ticket = file_ticket(site, customer_mail(subject="Kasse druckt keine Bons"))
    await mailbot(site_config, "outbox", "flush")
    ack = smtp_sink.wait_for(to("karla@kunde.example", ticket["number"]))[0]
    escalate_url = links_in(ack.message)["escalate"]

    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(escalate_url)
    await expect(page.locator("h1")).to_have_text(f"Ticket {ticket['number']} eskalieren")
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await expect(page.get_by_text("kostenpflichtig, wenn sich herausstellt")).to_be_visible()
    await expect(page.get_by_text("Kasse druckt keine Bons")).to_be_visible()
    await shot(page, tmp_path, "escalate")
    await page.get_by_label("Telefonnummer für den Rückruf").fill("+49 89 555 0100")
    await page.get_by_role("button", name="Rückruf-Service kostenpflichtig aktivieren").click()
    await expect(page.locator("h1")).to_have_text("Rückruf-Service aktiviert")
    await expect(page.get_by_text("+49 89 555 0100")).to_be_visible()
    await shot(page, tmp_path, "escalated")

    shown = json.loads(await mailbot(site_config, "tickets", "show", ticket["number"], "--json"))
    assert shown["escalated_at"] and shown["escalation_phone"] == "+49 89 555 0100"
    assert shown["priority"] == "urgent"
    assert "escalated" in [e["kind"] for e in shown["events"]]
    await mailbot(site_config, "outbox", "flush")
    for agent in ("agent1@example.com", "agent2@example.com"):
        alert = smtp_sink.wait_for(to(agent, "ESKALATION"))[0]
        assert "+49 89 555 0100" in alert.message.get_body(("plain",)).get_content()
    smtp_sink.wait_for(to("karla@kunde.example", "Rückruf-Service aktiviert"))

    await page.goto(escalate_url)
    await expect(page.locator("h1")).to_have_text("Bereits eskaliert")
    await shot(page, tmp_path, "already-escalated")
    assert csp_errors == []


@pytest.mark.parametrize("site_config", ["en"], indirect=True)
async def test_ticket_page_shows_thread_takes_a_reply_and_offers_downloads(
        site, site_config, page, csp_errors, tmp_path):
    """On my ticket page I see the conversation, download my file and reply without mail."""
    raw = customer_mail(subject="Till prints nothing", body="Since this morning.\n",
                        attachments=(("report.txt", "text/plain", b"error 42\n"),))
    ticket = file_ticket(site, raw)
    ticket_url = links_in(outbox_mails(site, "acknowledgement")[0])["ticket"]

    await page.goto(ticket_url)
    await expect(page.locator("h1")).to_have_text(f"Ticket {ticket['number']}: "
                                                  "Till prints nothing")
    await expect(page.get_by_text("Since this morning.")).to_be_visible()
    await shot(page, tmp_path, "ticket")
    async with page.expect_download() as waiting:
        await page.get_by_role("link", name="report.txt").click()
    download = await waiting.value
    assert download.suggested_filename == "report.txt"
    assert Path(await download.path()).read_bytes() == b"error 42\n"

    await page.get_by_label("Your message to support").fill("Restarting did not help.")
    await page.get_by_role("button", name="Send message").click()
    await expect(page.locator("article").last).to_contain_text("Restarting did not help.")
    assert page.url == ticket_url
    await shot(page, tmp_path, "ticket-replied")
    shown = json.loads(await mailbot(site_config, "tickets", "show", ticket["number"], "--json"))
    assert shown["messages"][-1]["body"] == "Restarting did not help."

    await page.get_by_role("link", name="Escalate ticket").click()
    await expect(page.locator("h1")).to_have_text(f"Escalate ticket {ticket['number']}")
    await shot(page, tmp_path, "escalate-en")
    assert csp_errors == []
