"""What became of one inbound mail: the answer every filing step gives its source."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """What became of one mail.

    ``status`` is one of created, followup, duplicate, note, ignored, bounce, agent_reply,
    suspicious or quarantined; ``detail`` says why in a few words (for logs and the CLI).
    """

    status: str
    ticket_number: str = ""
    detail: str = ""


class OperatorError(ValueError):
    """A request of an operator that cannot be carried out; the message says why and what
    is allowed."""
