"""mailbot's configuration: one schema of frozen dataclasses, loaded from ``mailbot.toml``.

Every key has a default (documented in the shipped ``mailbot.toml``), so an empty
file runs the embedded defaults: SQLite under ``./data``, the SMTP listener on
127.0.0.1:2525, outbound mail into a local Maildir.
"""

from __future__ import annotations

import logging
import os
import secrets
import tomllib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Literal

from mailbot.policy.config import PolicyConfig
from mailbot.policy.rules import build_policy
from mailbot.reading.facts import FactsConfig, compile_facts
from mailbot.reading.limits import Limits
from mailbot.settings.schema import ConfigError, Secret, build

log = logging.getLogger(__name__)

DEFAULT_PATH = "mailbot.toml"
SECRET_ENV = "MAILBOT_SECRET"  # noqa: S105 - the variable name, not a secret


@dataclass(frozen=True)
class ServiceConfig:
    """Where data lives and how the process identifies itself."""

    data_dir: str = "data"
    instance_id: str = "mailbot"
    language: Literal["de", "en"] = "de"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "text" (readable) or "json" (one object a line, for a log collector).
    log_format: Literal["text", "json"] = "text"
    templates_dir: str = ""
    busy_timeout_seconds: float = 5.0


@dataclass(frozen=True)
class SupportConfig:
    """The support mailbox customers write to, and the secret that signs links."""

    address: str = "support@example.com"
    name: str = "Support"
    aliases: tuple[str, ...] = ()
    signing_secret: Secret = ""
    signing_secrets_old: tuple[str, ...] = ()
    token_max_age_days: int = 90

    def __post_init__(self) -> None:
        if "@" not in self.address:
            raise ValueError(f"address {self.address!r} is not an email address")

    @property
    def addresses(self) -> tuple[str, ...]:
        """All support addresses, lower-case, the main one first."""
        return tuple(dict.fromkeys(a.lower() for a in (self.address, *self.aliases)))


@dataclass(frozen=True)
class TicketsConfig:
    """Ticket numbers, the subject tag and follow-ups to closed tickets."""

    tag_prefix: str = "Ticket#"
    number_format: str = "{date:%Y%m%d}{counter:04d}"
    closed_followup: Literal["new_linked", "reopen", "reopen_within_days"] = "new_linked"
    reopen_days: int = 14

    def __post_init__(self) -> None:
        if "{counter" not in self.number_format:
            raise ValueError(f"number_format {self.number_format!r} must contain {{counter}}, "
                             "or ticket numbers would repeat")
        try:
            self.number_format.format(date=datetime.now(UTC), counter=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"number_format {self.number_format!r} is not usable: {exc!r}; "
                             "use {date:...} and {counter:...}") from exc


@dataclass(frozen=True)
class ListenerConfig:
    """The built-in SMTP/LMTP listener."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 2525
    protocol: Literal["smtp", "lmtp"] = "smtp"
    accept_any_recipient: bool = False
    # Longest line accepted in a mail, in bytes (RFC 5321 says 1,000; real mail has longer).
    max_line_bytes: int = 10_000


@dataclass(frozen=True)
class ImapConfig:
    """One IMAP mailbox to read support mail from."""

    host: str
    username: str
    name: str = ""
    port: int = 0
    security: Literal["tls", "starttls", "plain"] = "tls"
    password: Secret = ""
    folder: str = "INBOX"
    done_folder: str = ""
    quarantine_folder: str = "Quarantine"
    idle: bool = True
    poll_seconds: float = 60.0
    batch_size: int = 100
    # Bytes of mail fetched at once (sizes are asked first); a bigger mail comes alone.
    fetch_budget_bytes: int = 8 * 1024 * 1024
    timeout_seconds: float = 30.0
    ca_file: str = ""

    @property
    def label(self) -> str:
        """A name for logs and health output."""
        return self.name or f"{self.username}@{self.host}"

    @property
    def effective_port(self) -> int:
        """The configured port, or the standard one for the security mode."""
        return self.port or (993 if self.security == "tls" else 143)


@dataclass(frozen=True)
class RelayConfig:
    """Where outbound mail goes: an SMTP relay, or a local Maildir when host is empty."""

    host: str = ""
    port: int = 587
    security: Literal["starttls", "tls", "plain"] = "starttls"
    username: str = ""
    password: Secret = ""
    timeout_seconds: float = 30.0
    maildir: str = ""
    ca_file: str = ""
    # The name we greet the relay with (EHLO); empty: this machine's fully qualified name.
    helo_name: str = ""


@dataclass(frozen=True)
class InboundLimits(Limits):
    """[limits]: what one inbound mail may contain, and what a mail over the size gets."""

    # "quarantine": a mail over max_message_bytes is kept and quarantined with the reason
    # (its MTA never bounces it); "reject": the listener answers 552 5.3.4, `ingest` exits 65.
    oversize: Literal["quarantine", "reject"] = "quarantine"


@dataclass(frozen=True)
class OutboxConfig:
    """Retry policy of the outbox sender."""

    # Days a mail is retried after temporary failures, from when it was queued (as an
    # MTA's queue lifetime); then it fails and the ticket and the agents hear of it.
    lifetime_days: float = 5.0
    backoff_seconds: float = 30.0
    max_backoff_seconds: float = 3600.0
    batch_size: int = 50


@dataclass(frozen=True)
class WebConfig:
    """The small HTTP server: escalation link, ticket page, health and metrics."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str = "http://127.0.0.1:8080"
    escalation_notice_de: str = (
        "Bitte beachten Sie: Der Rückruf-Service ist kostenpflichtig, wenn sich herausstellt, "
        "dass das Problem nicht auf einen Fehler unserer Systeme zurückzuführen ist.")
    escalation_notice_en: str = (
        "Please note: the call-back service is charged if the problem turns out not to be "
        "caused by our systems.")
    max_source_failures: int = 5
    max_body_bytes: int = 65536
    form_max_age_seconds: int = 86400
    # Form posts accepted per minute from one client address and for one ticket; 0: no limit.
    max_posts_per_client_per_minute: int = 30
    max_posts_per_ticket_per_minute: int = 10

    def __post_init__(self) -> None:
        for key in ("max_posts_per_client_per_minute", "max_posts_per_ticket_per_minute"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} {getattr(self, key)} must be 0 (no limit) or more")

    def escalation_notice(self, language: str) -> str:
        """The call-back charging note in ``language`` (German unless English)."""
        return self.escalation_notice_en if language == "en" else self.escalation_notice_de


@dataclass(frozen=True)
class AdminConfig:
    """The operators' HTTP listener: /healthz and /metrics, apart from the customer pages."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8081


@dataclass(frozen=True)
class AgentConfig:
    """One support agent: answers by mail, may send commands."""

    address: str
    name: str = ""
    team: str = ""

    def __post_init__(self) -> None:
        if "@" not in self.address:
            raise ValueError(f"agent address {self.address!r} is not an email address")


@dataclass(frozen=True)
class TeamConfig:
    """The agents; a separate file is re-read on SIGHUP or when it changes."""

    agents: tuple[AgentConfig, ...] = ()
    file: str = ""
    # Days an agent's reply address (sent to that agent alone) is accepted after it was sent.
    reply_token_days: int = 30

    def __post_init__(self) -> None:
        if self.reply_token_days < 1:
            raise ValueError(f"reply_token_days {self.reply_token_days} must be at least 1")


@dataclass(frozen=True)
class DirectoryConfig:
    """How far a mail's own words link its sender to an account of the customer list."""

    # A customer number in a mail from an address linked to no account: "confirm" (a claim
    # agents see and confirm with #confirm, or `mailbot accounts link`), "domain" (a claim
    # shown, never counted: only the account's mail domains link), "trust" (links at once).
    claims: Literal["confirm", "domain", "trust"] = "confirm"


@dataclass(frozen=True)
class NotificationsConfig:
    """What customers and agents hear from the scheduler, and when."""

    statuses: tuple[Literal["open", "waiting", "resolved", "closed"], ...] = (
        "open", "waiting", "resolved", "closed")
    coalesce_seconds: float = 60.0
    warning_minutes: int = 60
    waiting_reminder_days: int = 3
    auto_close_days: int = 7
    interval_seconds: float = 15.0


@dataclass(frozen=True)
class HygieneConfig:
    """Protection against loops, robots and strangers."""

    max_acks_per_hour: int = 5
    stranger_followup: Literal["new_linked", "note", "accept"] = "new_linked"


@dataclass(frozen=True)
class TrustConfig:
    """Whose word counts: the border MTA whose Authentication-Results are believed."""

    # The authserv-id our receiving MTA writes into Authentication-Results (RFC 8601),
    # e.g. "mx.example.com"; "" trusts no Authentication-Results at all.
    authserv_id: str = ""


@dataclass(frozen=True)
class SpamConfig:
    """Mail the filter in front called spam: held, never answered, released by an operator."""

    enabled: bool = True
    # Microsoft's spam confidence level (SCL, -1..9) from which a mail is spam.
    scl_threshold: int = 5
    # Days a held mail is kept before it is deleted.
    keep_days: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.scl_threshold <= 9:
            raise ValueError(f"scl_threshold {self.scl_threshold} must be between 0 and 9")
        if self.keep_days <= 0:
            raise ValueError(f"keep_days {self.keep_days:g} must be more than 0")


@dataclass(frozen=True)
class Config:
    """The whole configuration of one mailbot instance."""

    service: ServiceConfig = field(default_factory=ServiceConfig)
    support: SupportConfig = field(default_factory=SupportConfig)
    tickets: TicketsConfig = field(default_factory=TicketsConfig)
    listener: ListenerConfig = field(default_factory=ListenerConfig)
    imap: tuple[ImapConfig, ...] = ()
    relay: RelayConfig = field(default_factory=RelayConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    web: WebConfig = field(default_factory=WebConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    limits: InboundLimits = field(default_factory=InboundLimits)
    hygiene: HygieneConfig = field(default_factory=HygieneConfig)
    team: TeamConfig = field(default_factory=TeamConfig)
    directory: DirectoryConfig = field(default_factory=DirectoryConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    facts: FactsConfig = field(default_factory=FactsConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    spam: SpamConfig = field(default_factory=SpamConfig)
    source_path: str = ""

    @property
    def data_dir(self) -> Path:
        """The one directory an operator backs up."""
        return Path(self.service.data_dir)

    @property
    def templates_dir(self) -> Path:
        """Mail and page templates, ``templates/<lang>/``: the configured directory, else the
        ones shipped inside the package (found wherever and however it was installed)."""
        if self.service.templates_dir:
            return Path(self.service.templates_dir)
        return Path(str(resources.files("mailbot") / "templates"))

    @property
    def timezone(self) -> str:
        """The time zone of ticket numbers and of every time a customer or agent reads."""
        return self.policy.calendar.timezone

    @property
    def maildir(self) -> Path:
        """The Maildir outbound mail is written to when no relay host is set."""
        return Path(self.relay.maildir) if self.relay.maildir else self.data_dir / "maildir"


def config_path(explicit: str | None) -> Path:
    """The config file to use: the option, else ``MAILBOT_CONFIG``, else ``./mailbot.toml``."""
    return Path(explicit or os.environ.get("MAILBOT_CONFIG") or DEFAULT_PATH)


def load(path: Path, require_file: bool = False) -> Config:
    """Load and validate a config file; raise :class:`ConfigError` naming file, key and reason."""
    data: dict = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("", f"not valid TOML: {exc}", str(path)) from exc
    elif require_file:
        raise ConfigError("", "file not found", str(path))
    try:
        config = build(Config, data)
        _check_policy(config)
    except ConfigError as exc:
        raise ConfigError(exc.path, exc.reason, str(path)) from exc
    return _anchor(config, path.resolve().parent)


def _check_policy(config: Config) -> None:
    """Compile rules, calendars and fact patterns once, so a bad one stops the start."""
    for section, check in (("policy", build_policy), ("facts", compile_facts)):
        try:
            check(getattr(config, section))
        except (ValueError, KeyError) as exc:
            key, _, reason = str(exc).strip("'\"").partition(": ")
            raise ConfigError(key if reason else section, reason or str(exc)) from exc


def _anchor(config: Config, base: Path) -> Config:
    service = config.service
    data_dir = Path(service.data_dir)
    if not data_dir.is_absolute():
        service = replace(service, data_dir=str(base / data_dir))
    env_secret = os.environ.get(SECRET_ENV, "")
    support = config.support
    if env_secret and not support.signing_secret:
        support = replace(support, signing_secret=env_secret)
    return replace(config, service=service, support=support, source_path=str(base))


def signing_secret(config: Config) -> str:
    """The configured signing secret, else one generated once and kept in the data directory.

    The key file is created 0600 in a 0700 directory.  Processes starting at once on a new
    data directory agree on one key: each writes a temporary file of its own, the first to
    link it as ``signing.key`` wins, and every process reads the winner's key.
    """
    if config.support.signing_secret:
        return config.support.signing_secret
    key_file = config.data_dir / "signing.key"
    if not key_file.exists():
        key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = key_file.with_name(f".signing.key.{os.getpid()}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, key_file)
            except FileExistsError:  # another process was first: its key counts
                pass
            else:
                log.warning("generated a signing secret in %s: back it up with the data "
                            "directory, or links and reply addresses in sent mails stop "
                            "working", key_file)
        finally:
            tmp.unlink(missing_ok=True)
    return key_file.read_text(encoding="utf-8").strip()
