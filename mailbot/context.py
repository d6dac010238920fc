"""The Context: everything a pipeline step, job or page needs, built once and handed down.

The command line and the daemon (``mailbot.app``) build one Context per process with
:func:`open_context`, complete and frozen; every step below receives it as its first
argument and never changes it.  What varies per process is passed in when it is built:
the clock (tests pass their own) and ``on_outbox``, the bell that wakes the daemon's
outbox sender when a step queued a mail.

The one part that may change while the daemon runs is the :class:`Settings` (the config
and what is built from it: composer, policy, fact patterns), held in ``live``: a reload
(SIGHUP, :meth:`Context.reload`) builds new settings and swaps them in one step, so a step
sees the old settings or the new ones, never a mix of both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mailbot.outbound.compose import Composer, text_environment
from mailbot.outbound.tokens import Signer
from mailbot.policy import holiday_cache
from mailbot.policy.rules import Policy, build_policy
from mailbot.reading.facts import FactPatterns, compile_facts
from mailbot.settings.config import Config, signing_secret
from mailbot.settings.team import Reloaded, Team, reloaded
from mailbot.status.health import Health
from mailbot.status.metrics import Metrics
from mailbot.store import Store
from mailbot.store.blobs import FILES, SPOOL, Blobs


def utc_now() -> datetime:
    """The real clock; tests pass their own."""
    return datetime.now(UTC)


def _nobody_listens() -> None:
    """The outbox bell of a process without a sender (the CLI): nothing to wake."""


@dataclass(frozen=True)
class Settings:
    """The config in force and what is built from it; replaced whole by a reload."""

    config: Config
    composer: Composer
    policy: Policy
    facts: FactPatterns


def build_settings(config: Config, signer: Signer) -> Settings:
    """The composer, policy and fact patterns of ``config`` (links signed by ``signer``)."""
    support = config.support
    composer = Composer(text_environment(config.templates_dir, config.timezone), signer,
                        support.address, config.service.instance_id,
                        config.tickets.tag_prefix, config.timezone)
    policy = build_policy(config.policy, holidays=holiday_cache.kept_in(config.data_dir))
    return Settings(config=config, composer=composer, policy=policy,
                    facts=compile_facts(config.facts))


class Live:
    """The settings in force: the one place a reload swaps them (one reference, so
    threads reading it meanwhile see either the old settings or the new)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings


@dataclass(frozen=True)
class Context:
    """Everything a pipeline step or job needs, passed explicitly."""

    live: Live
    store: Store
    spool: Blobs  # raw mails by content hash
    files: Blobs  # attachments by content hash
    signer: Signer
    team: Team
    health: Health
    metrics: Metrics
    clock: Callable[[], datetime] = utc_now
    on_outbox: Callable[[], None] = _nobody_listens

    @property
    def config(self) -> Config:
        """The configuration in force."""
        return self.live.settings.config

    @property
    def composer(self) -> Composer:
        """Builds our outgoing mails (templates, tag, time zone of the config in force)."""
        return self.live.settings.composer

    @property
    def policy(self) -> Policy:
        """Priority rules, targets and calendars in force."""
        return self.live.settings.policy

    @property
    def facts(self) -> FactPatterns:
        """The patterns of the facts read from mails, in force."""
        return self.live.settings.facts

    def reload(self, config: Config) -> Reloaded:
        """Put ``config`` (the config file read again, valid) in force as far as it takes
        effect without a restart: new settings and agents; what applied and what waits."""
        found = reloaded(self.config, config)
        settings = build_settings(found.config, self.signer)
        self.team.reload(found.config)
        self.live.settings = settings
        return found

    def link(self, purpose: str, number: str) -> str:
        """A signed customer link for one ticket."""
        path = "escalate" if purpose == "escalate" else "t"
        base = self.config.web.base_url.rstrip("/")
        return f"{base}/{path}/{self.signer.link_token(purpose, number)}"


def open_context(config: Config, clock: Callable[[], datetime] = utc_now,
                 on_outbox: Callable[[], None] = _nobody_listens) -> Context:
    """Open the store and build the one context of this process.

    A new, empty database gets the current schema; an existing one at an older schema is
    refused (:class:`~mailbot.store.schema.SchemaMismatch`) and never migrated here, as a
    daemon may be running on it: only `mailbot migrate` brings it up.
    """
    store = Store(config.database, config.service.busy_timeout_seconds,
                  pool_size=config.store.pool_size)
    support = config.support
    signer = Signer(signing_secret(config), support.signing_secrets_old,
                    support.token_max_age_days * 86400)
    health = Health()
    return Context(live=Live(build_settings(config, signer)), store=store,
                   spool=store.blobs(SPOOL, config.data_dir),
                   files=store.blobs(FILES, config.data_dir), signer=signer,
                   team=Team(config), health=health, metrics=Metrics(store, health),
                   clock=clock, on_outbox=on_outbox)
