"""Logs an operator's collector can read, and the version."""

from __future__ import annotations

import json
import smtplib

from daemon_util import Instance
from mails import build_mail


def test_json_logs_are_one_object_a_line_with_the_mails_context(tmp_path):
    """With log_format = "json" every line the daemon logs is a JSON object; the filing
    line names the ticket, the Message-ID and the source."""
    bot = Instance(tmp_path)
    bot.update("service", log_format="json")
    with bot.start() as daemon:
        with smtplib.SMTP(*daemon.listener, timeout=20) as client:
            client.sendmail("kunde@example.org", ["support@example.com"],
                            build_mail(message_id="<json@kunde.example>"))
        bot.wait_tickets(1)
    lines = [json.loads(line) for line in daemon.log().splitlines() if line.strip()]
    filed = next(line for line in lines if line.get("outcome") == "created")
    assert filed["message_id"] == "json@kunde.example" and filed["source"]
    assert filed["ticket"] == bot.only_ticket()["number"]
    assert {"time", "level", "logger", "message"} <= set(filed)


def test_the_version_is_printed():
    """`mailbot --version` names the installed version."""
    from click.testing import CliRunner

    from mailbot.app.cli import main

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("mailbot ")
