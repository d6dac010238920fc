"""mailbot's configuration: one schema of frozen dataclasses, loaded from ``mailbot.toml``.

Every key has a default (documented in the shipped ``mailbot.toml``), so an empty
file runs the embedded defaults: SQLite under ``./data``, the SMTP listener on
127.0.0.1:2525, outbound mail into a local Maildir.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Literal

from mailbot.policy.config import PolicyConfig
from mailbot.reading.facts import FactsConfig
from mailbot.reading.limits import Limits
from mailbot.settings.schema import ConfigError, Secret, build
from mailbot.store import dialect

log = logging.getLogger(__name__)

DEFAULT_PATH = "mailbot.toml"
SECRET_ENV = "MAILBOT_SECRET"  # noqa: S105 - the variable name, not a secret
# What a ticket number may be: the subject tag finds it, tokens carry it (outbound/tokens.py).
TICKET_NUMBER = re.compile(r"[0-9A-Za-z._/-]{1,40}")
PORTS = range(1, 65536)
# The longest per-mail budget ([limits] max_seconds_per_mail): a day.
MAX_BUDGET_SECONDS = 86_400


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
    # Processes kept warm between mails to read them (see [limits] max_seconds_per_mail);
    # a source that finds none free starts one more, so no source waits for another's mail.
    reading_processes: int = 2

    def __post_init__(self) -> None:
        if self.reading_processes < 0:
            raise ValueError(f"reading_processes {self.reading_processes} must be 0 or more")


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
            numbers = sample_numbers(self.number_format)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"number_format {self.number_format!r} is not usable: {exc!r}; "
                             "use {date:...} and {counter:...}") from exc
        for number in numbers:
            if not TICKET_NUMBER.fullmatch(number):
                raise ValueError(f"number_format {self.number_format!r} makes numbers like "
                                 f"{number!r}: a ticket number must be 1 to 40 ASCII letters, "
                                 "digits and - _ . / (what subject tags and reply addresses "
                                 "carry)")


def sample_numbers(number_format: str) -> list[str]:
    """Ticket numbers ``number_format`` makes on days of every month and weekday, morning
    and afternoon, with a small and a large counter: enough to see every character it uses."""
    days = [datetime(2026, month, 1, 13, tzinfo=UTC) for month in range(1, 13)]
    days += [datetime(2026, 3, day, 1, tzinfo=UTC) for day in range(2, 9)]
    return [number_format.format(date=day, counter=counter) for day in days
            for counter in (1, 99999)]


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


MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"
# The keys each provider reads besides provider, grant, scope, token_file and ca_file.
OAUTH2_KEYS = {
    "microsoft": ("tenant", "authority", "client_id", "client_secret", "certificate_file",
                  "refresh_token"),
    "google": ("client_id", "client_secret", "key_file", "token_url", "refresh_token"),
    "generic": ("client_id", "client_secret", "token_url", "device_url", "refresh_token"),
}
# Folders that hold every mail of a Gmail account: never a source (filed mail stays there).
GMAIL_ALL_MAIL = ("[gmail]/all mail", "[google mail]/all mail")


@dataclass(frozen=True)
class OAuth2Config:
    """How mailbot gets OAuth2 access tokens for one mailbox or the relay (auth = "oauth2").

    ``grant = "client_credentials"``: the application's own credentials (Microsoft: a
    client secret or certificate of a service principal; Google: a service account key
    with domain-wide delegation; generic: client id and secret).  ``"refresh_token"``: a
    user's delegated consent, from ``mailbot oauth login NAME`` or the ``refresh_token`` key.
    """

    provider: Literal["", "microsoft", "google", "generic"] = ""
    grant: Literal["client_credentials", "refresh_token"] = "client_credentials"
    tenant: str = ""
    authority: str = MICROSOFT_AUTHORITY
    client_id: str = ""
    client_secret: Secret = ""
    certificate_file: str = ""
    key_file: str = ""
    token_url: str = ""
    device_url: str = ""
    scope: str = ""
    refresh_token: Secret = ""
    token_file: str = ""
    ca_file: str = ""

    def problem(self) -> tuple[str, str] | None:
        """The first key that makes this table unusable and why; None when it is usable."""
        if not self.provider:
            return "provider", 'required with auth = "oauth2": "microsoft", "google" or "generic"'
        unused = [key for keys in OAUTH2_KEYS.values() for key in keys
                  if key not in OAUTH2_KEYS[self.provider]
                  and getattr(self, key) != getattr(OAuth2Config, key)]
        if unused:
            return unused[0], f'not used with provider = "{self.provider}"'
        if self.ca_file:
            unreadable = _readable("ca_file", self.ca_file, "BEGIN CERTIFICATE",
                                   "a PEM certificate")
            if unreadable:
                return unreadable
        return {"microsoft": self._microsoft_problem, "google": self._google_problem,
                "generic": self._generic_problem}[self.provider]()

    def _microsoft_problem(self) -> tuple[str, str] | None:
        if not self.tenant:
            return "tenant", "required: the directory (tenant) ID or domain of the app"
        if not self.client_id:
            return "client_id", "required: the application (client) ID of the app registration"
        if not self.authority.startswith("https://"):
            return "authority", f"must be an https:// URL, got {self.authority!r}"
        if self.grant == "refresh_token":
            return None
        if bool(self.client_secret) == bool(self.certificate_file):
            return "client_secret", ('set client_secret or certificate_file (one of them) for '
                                     'grant = "client_credentials"')
        if self.client_secret:
            return None
        return _readable("certificate_file", self.certificate_file, "BEGIN CERTIFICATE",
                         "a PEM file with the private key and the certificate")

    def _google_problem(self) -> tuple[str, str] | None:
        if self.grant == "client_credentials":
            if not self.key_file:
                return "key_file", ('required for grant = "client_credentials": the service '
                                    'account key (JSON) with domain-wide delegation; or use '
                                    'grant = "refresh_token" with an installed app')
            return _readable("key_file", self.key_file, '"service_account"',
                             "a service account key in JSON")
        for key in ("client_id", "client_secret", "refresh_token"):
            if not getattr(self, key):
                return key, ('required for grant = "refresh_token" (an installed app\'s client '
                             'and the refresh token of its consent)')
        return _url("token_url", self.token_url, required=False)

    def _generic_problem(self) -> tuple[str, str] | None:
        for key in ("token_url", "device_url"):
            bad = _url(key, getattr(self, key), required=key == "token_url")
            if bad:
                return bad
        if not self.client_id:
            return "client_id", "required: the client id registered at the token server"
        if self.grant == "client_credentials" and not self.client_secret:
            return "client_secret", 'required for grant = "client_credentials"'
        if self.grant == "refresh_token" and not (self.refresh_token or self.device_url):
            return "refresh_token", ('required for grant = "refresh_token": set it, or set '
                                     'device_url and sign in with `mailbot oauth login NAME`')
        return None


def _readable(key: str, path: str, marker: str, what: str) -> tuple[str, str] | None:
    """Why the file at ``path`` cannot serve as ``what``, or None."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return key, f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
    return None if marker in text else (key, f"{path} is not {what}")


def _url(key: str, value: str, required: bool) -> tuple[str, str] | None:
    """Why ``value`` is no usable endpoint URL, or None."""
    if not value:
        return (key, "required: the token endpoint URL") if required else None
    if not value.startswith(("https://", "http://")):
        return key, f"must be an http(s):// URL, got {value!r}"
    return None


def _login_problem(auth: str, password: str, oauth2: OAuth2Config) -> tuple[str, str] | None:
    """What is wrong with the login keys of an [[imap]] table or [relay], or None."""
    if auth == "password":
        if oauth2 != OAuth2Config():
            return "oauth2", 'set auth = "oauth2" to log in with it (auth is "password")'
        return None
    if password:
        return "password", 'not used with auth = "oauth2": remove it'
    found = oauth2.problem()
    return (f"oauth2.{found[0]}", found[1]) if found else None


@dataclass(frozen=True)
class ImapConfig:
    """One IMAP mailbox to read support mail from."""

    host: str
    username: str
    name: str = ""
    port: int = 0
    security: Literal["tls", "starttls", "plain"] = "tls"
    # "password", or "oauth2" with the [imap.oauth2] table (Microsoft 365, Google Workspace).
    auth: Literal["password", "oauth2"] = "password"
    password: Secret = ""
    oauth2: OAuth2Config = field(default_factory=OAuth2Config)
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
    # Several nodes with this table: one works the mailbox, the others try to take over
    # this often (seconds) and are on standby meanwhile.
    lease_retry_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.lease_retry_seconds <= 0:
            raise ValueError(f"lease_retry_seconds {self.lease_retry_seconds:g} must be more "
                             "than 0")

    @property
    def label(self) -> str:
        """A name for logs and health output."""
        return self.name or f"{self.username}@{self.host}"

    @property
    def effective_port(self) -> int:
        """The configured port, or the standard one for the security mode."""
        return self.port or (993 if self.security == "tls" else 143)

    def problem(self) -> tuple[str, str] | None:
        """The first key of this table that cannot work and why; None when all can."""
        if self.folder.lower() in GMAIL_ALL_MAIL:
            return "folder", (f"{self.folder!r} holds every mail of the account, also the ones "
                              "filed before: read INBOX (a done_folder is a Gmail label)")
        return _login_problem(self.auth, self.password, self.oauth2)


@dataclass(frozen=True)
class RelayConfig:
    """Where outbound mail goes: an SMTP relay, or a local Maildir when host is empty."""

    host: str = ""
    port: int = 587
    security: Literal["starttls", "tls", "plain"] = "starttls"
    # "password" (none when username is empty), or "oauth2" with the [relay.oauth2] table.
    auth: Literal["password", "oauth2"] = "password"
    username: str = ""
    password: Secret = ""
    oauth2: OAuth2Config = field(default_factory=OAuth2Config)
    timeout_seconds: float = 30.0
    maildir: str = ""
    ca_file: str = ""
    # The name we greet the relay with (EHLO); empty: this machine's fully qualified name.
    helo_name: str = ""

    def problem(self) -> tuple[str, str] | None:
        """The first key of [relay] that cannot work and why; None when all can."""
        if self.auth == "oauth2" and not (self.host and self.username):
            return ("username" if self.host else "host",
                    'required with auth = "oauth2" (the relay, and the mailbox that sends)')
        return _login_problem(self.auth, self.password, self.oauth2)


@dataclass(frozen=True)
class InboundLimits(Limits):
    """[limits]: what one inbound mail may contain, and what a mail over the size gets."""

    # "quarantine": a mail over max_message_bytes is kept and quarantined with the reason
    # (its MTA never bounces it); "reject": the listener answers 552 5.3.4, `ingest` exits 65.
    oversize: Literal["quarantine", "reject"] = "quarantine"
    # Longest a mail may take to be read (parsed, classified) in a process of its own, in
    # seconds: then the process is ended and the mail quarantined; 0 reads it in the
    # source's own process, without a budget.
    max_seconds_per_mail: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.max_seconds_per_mail <= MAX_BUDGET_SECONDS:
            raise ValueError(f"max_seconds_per_mail {self.max_seconds_per_mail:g} must be 0 "
                             f"(no budget) or up to {MAX_BUDGET_SECONDS:,} (a day)")


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
class RetentionConfig:
    """How long closed tickets, their raw mails and the quarantine are kept; 0: forever."""

    # Days after a ticket is closed until its raw mails and attachments are deleted (its
    # texts and events stay); also the age from which raw mails that made no ticket go.
    raw_days: float = 0.0
    # Days after a ticket is closed until it is deleted whole.
    tickets_days: float = 0.0
    # Days after a quarantined mail was last seen until its entry and raw bytes go.
    quarantine_days: float = 0.0

    def __post_init__(self) -> None:
        for key in ("raw_days", "tickets_days", "quarantine_days"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} {getattr(self, key):g} must be 0 (keep forever) "
                                 "or more")


@dataclass(frozen=True)
class StoreConfig:
    """[store]: where tickets are kept, SQLite under data_dir (the default) or PostgreSQL."""

    # "": mailbot.sqlite3 in data_dir; "sqlite:///absolute/path"; or
    # "postgresql://user:password@host:5432/db" (several mailbot nodes share one).
    url: str = ""
    # The PostgreSQL password when the URL carries none (inline, { env } or { file }).
    password: Secret = ""
    # PostgreSQL: connections a process opens at most (as its threads need them).
    pool_size: int = 4

    def problem(self) -> tuple[str, str] | None:
        """The key of [store] that cannot work and why; None when it can."""
        if self.pool_size < 1:
            return "pool_size", f"{self.pool_size} connections cannot work: use 1 or more"
        try:
            if dialect.is_postgres(self.url):
                dialect.check_postgres(self.url)
                if self.password and dialect.has_password(self.url):
                    return "password", "the url carries a password already: keep one of them"
            elif self.url:
                dialect.sqlite_path(self.url)
            elif self.password:
                return "password", "only used with a postgresql:// url"
        except dialect.BadStoreURL as exc:
            return "url", str(exc)
        return None

    def database(self, data_dir: Path) -> Path | str:
        """What the store opens: the SQLite file, or the PostgreSQL URL with its password."""
        if not self.url:
            return data_dir / "mailbot.sqlite3"
        if dialect.is_postgres(self.url):
            return dialect.with_password(self.url, self.password)
        return dialect.sqlite_path(self.url)


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
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    source_path: str = ""

    @property
    def data_dir(self) -> Path:
        """The one directory an operator backs up."""
        return Path(self.service.data_dir)

    @property
    def database(self) -> Path | str:
        """The database of this instance: an SQLite file, or a PostgreSQL URL ([store])."""
        return self.store.database(self.data_dir)

    @property
    def templates_dir(self) -> Path:
        """Mail and page templates, ``templates/<lang>/``: the configured directory, else the
        ones shipped inside the package (found wherever and however it was installed)."""
        if self.service.templates_dir:  # a relative one lies beside the config file
            return Path(self.source_path or ".") / self.service.templates_dir
        return Path(str(resources.files("mailbot") / "templates"))

    @property
    def timezone(self) -> str:
        """The time zone of ticket numbers and of every time a customer or agent reads."""
        return self.policy.calendar.timezone

    @property
    def maildir(self) -> Path:
        """The Maildir outbound mail is written to when no relay host is set."""
        if self.relay.maildir:  # a relative one lies beside the config file
            return Path(self.source_path or ".") / self.relay.maildir
        return self.data_dir / "maildir"


def config_path(explicit: str | None) -> Path:
    """The config file to use: the option, else ``MAILBOT_CONFIG``, else ``./mailbot.toml``."""
    return Path(explicit or os.environ.get("MAILBOT_CONFIG") or DEFAULT_PATH)


def example_text(name: str) -> str:
    """One of the example files shipped inside the package (``mailbot/examples/``)."""
    return (resources.files("mailbot") / "examples" / name).read_text(encoding="utf-8")


def example_config(data_dir: str, signing_secret: str) -> str:
    """The shipped, commented mailbot.toml with this installation's data directory and
    signing secret written in (what `mailbot init` writes)."""
    text = example_text("mailbot.toml")
    for key, value in (("data_dir", data_dir), ("signing_secret", signing_secret)):
        line = f"{key} = {json.dumps(value)}"
        text = re.sub(rf"^{key} = .*$", lambda _, line=line: line, text, count=1,
                      flags=re.MULTILINE)
    return text


def load(path: Path, require_file: bool = False, compile_policy: bool = True) -> Config:
    """Load and validate a config file; raise :class:`ConfigError` naming file, key and reason.

    ``compile_policy`` False leaves rules, calendars and fact patterns uncompiled, for the
    commands that only read and never apply them (a calendar's public holidays cost a
    command most of its start); everything else is checked all the same.
    """
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
        _check_ports(config)
        if compile_policy:
            _check_policy(config, path.resolve().parent / config.service.data_dir)
        _check_logins(config)
        _check_store(config)
    except ConfigError as exc:
        raise ConfigError(exc.path, exc.reason, str(path)) from exc
    anchored = _anchor(config, path.resolve().parent)
    if dialect.is_postgres(anchored.store.url) and not anchored.support.signing_secret:
        raise ConfigError("support.signing_secret", "required with a PostgreSQL store: every "
                          "node must sign links and reply addresses with the same secret "
                          f"(set it, or {SECRET_ENV}, alike on every node)", str(path))
    return anchored


def _check_ports(config: Config) -> None:
    """Every port is one (1 to 65535; an [[imap]] port may be 0, the standard one), as the
    daemon would otherwise die with a traceback when it listens or connects."""
    ports = {"listener.port": config.listener.port, "web.port": config.web.port,
             "admin.port": config.admin.port, "relay.port": config.relay.port}
    ports.update({f"imap[{i}].port": c.port for i, c in enumerate(config.imap) if c.port})
    for key, port in ports.items():
        if port not in PORTS:
            raise ConfigError(key, f"{port} is not a port: use 1 to 65535")


def _check_policy(config: Config, data_dir: Path) -> None:
    """Compile rules, calendars and fact patterns once, so a bad one stops the start (the
    calendars' public holidays read from ``data_dir`` if a start kept them there)."""
    from mailbot.policy import holiday_cache  # the compilers: where they are needed
    from mailbot.policy.rules import build_policy
    from mailbot.reading.facts import compile_facts

    holidays = holiday_cache.read_from(data_dir)
    checks = (("policy", lambda policy: build_policy(policy, holidays=holidays)),
              ("facts", compile_facts))
    for section, check in checks:
        try:
            check(getattr(config, section))
        except (ValueError, KeyError) as exc:
            key, _, reason = str(exc.args[0] if exc.args else exc).partition(": ")
            raise ConfigError(key if reason else section, reason or str(exc)) from exc


def _check_store(config: Config) -> None:
    """Refuse a [store] url the store cannot open, before anything starts on it."""
    found = config.store.problem()
    if found:
        raise ConfigError(f"store.{found[0]}", found[1])


def _anchor(config: Config, base: Path) -> Config:
    service = config.service
    data_dir = Path(service.data_dir)
    if not data_dir.is_absolute():
        service = replace(service, data_dir=str(base / data_dir))
    env_secret = os.environ.get(SECRET_ENV, "")
    support = config.support
    if env_secret and not support.signing_secret:
        support = replace(support, signing_secret=env_secret)
    data_dir = Path(service.data_dir)
    imap = tuple(_with_token_file(c, data_dir, f"imap-{c.label}") for c in config.imap)
    relay = _with_token_file(config.relay, data_dir, "relay")
    return replace(config, service=service, support=support, imap=imap, relay=relay,
                   source_path=str(base))


def _check_logins(config: Config) -> None:
    """Refuse login keys that cannot work together (OAuth2 without a client id, ...)."""
    tables = [(f"imap[{i}]", c) for i, c in enumerate(config.imap)] + [("relay", config.relay)]
    for path, table in tables:
        found = table.problem()
        if found:
            raise ConfigError(f"{path}.{found[0]}", found[1])


def _with_token_file(table: ImapConfig | RelayConfig, data_dir: Path, name: str):
    """``table`` with its OAuth2 ``token_file`` set, by default <data_dir>/oauth/<name>.json
    (where a rotated refresh token is kept)."""
    if table.auth != "oauth2" or table.oauth2.token_file:
        return table
    slug = re.sub(r"[^A-Za-z0-9@._-]", "_", name)
    token_file = str(data_dir / "oauth" / f"{slug}.json")
    return replace(table, oauth2=replace(table.oauth2, token_file=token_file))


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
        import secrets  # once per data directory

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
