"""The Context: everything a pipeline step, job or page needs, built once and handed down.

The command line and the daemon (``mailbot.app``) build one Context per process with
:func:`open_context`, complete and frozen; every step below receives it as its first
argument and never changes it.  What varies per process is passed in when it is built:
the clock (tests pass their own) and ``on_outbox``, the bell that wakes the daemon's
outbox sender when a step queued a mail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mailbot.outbound.compose import Composer, text_environment
from mailbot.outbound.tokens import Signer
from mailbot.policy.rules import Policy, build_policy
from mailbot.reading.facts import FactPatterns, compile_facts
from mailbot.settings.config import Config, signing_secret
from mailbot.settings.team import Team
from mailbot.status.health import Health
from mailbot.status.metrics import Metrics
from mailbot.store import Store


def utc_now() -> datetime:
    """The real clock; tests pass their own."""
    return datetime.now(UTC)


def _nobody_listens() -> None:
    """The outbox bell of a process without a sender (the CLI): nothing to wake."""


@dataclass(frozen=True)
class Context:
    """Everything a pipeline step or job needs, passed explicitly."""

    config: Config
    store: Store
    signer: Signer
    composer: Composer
    team: Team
    policy: Policy
    facts: FactPatterns
    health: Health
    metrics: Metrics
    clock: Callable[[], datetime] = utc_now
    on_outbox: Callable[[], None] = _nobody_listens

    @property
    def spool_dir(self) -> Path:
        """Raw mails by content hash."""
        return self.config.data_dir / "spool"

    @property
    def files_dir(self) -> Path:
        """Attachments by content hash."""
        return self.config.data_dir / "files"

    def link(self, purpose: str, number: str) -> str:
        """A signed customer link for one ticket."""
        path = "escalate" if purpose == "escalate" else "t"
        base = self.config.web.base_url.rstrip("/")
        return f"{base}/{path}/{self.signer.link_token(purpose, number)}"


def open_context(config: Config, clock: Callable[[], datetime] = utc_now,
                 on_outbox: Callable[[], None] = _nobody_listens) -> Context:
    """Open the store (running migrations) and build the one context of this process."""
    store = Store(config.data_dir / "mailbot.sqlite3", config.service.busy_timeout_seconds)
    support = config.support
    signer = Signer(signing_secret(config), support.signing_secrets_old,
                    support.token_max_age_days * 86400)
    composer = Composer(text_environment(config.templates_dir, config.timezone), signer,
                        support.address, config.service.instance_id,
                        config.tickets.tag_prefix, config.timezone)
    health = Health()
    return Context(config=config, store=store, signer=signer, composer=composer,
                   team=Team(config), policy=build_policy(config.policy),
                   facts=compile_facts(config.facts), health=health,
                   metrics=Metrics(store, health), clock=clock, on_outbox=on_outbox)
