"""What changes without a restart: the agents of the team (SIGHUP or a changed agents file),
and which keys of a re-read config take effect at once (:func:`reloaded`).

Keys a running daemon has bound (ports, mailboxes, the relay, the data directory, the
signing keys, the scheduler's interval) wait for a restart; everything read while a mail,
job or page is handled takes effect at the next one.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import tomllib
from pathlib import Path

from mailbot.settings.config import AgentConfig, Config
from mailbot.settings.schema import ConfigError, convert

log = logging.getLogger(__name__)


def load_agents(config: Config) -> tuple[AgentConfig, ...]:
    """The agents named in the config plus those in the agents file (if any)."""
    path = agents_file(config)
    agents = [*config.team.agents, *(read_agents_file(path) if path is not None else ())]
    unique = {a.address.lower(): a for a in agents}
    return tuple(AgentConfig(address=k, name=a.name, team=a.team) for k, a in unique.items())


def read_agents_file(path: Path) -> tuple[AgentConfig, ...]:
    """The ``[[agents]]`` of one agents file; a ConfigError naming the file when it is bad."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("", f"cannot read the agents file: {exc.strerror}", str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"not valid TOML: {exc}", str(path)) from exc
    unknown = set(data) - {"agents"}
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown key; expected [[agents]]", str(path))
    try:
        return convert(tuple[AgentConfig, ...], data.get("agents", []), "agents")
    except ConfigError as exc:
        raise ConfigError(exc.path, exc.reason, str(path)) from exc


def agents_file(config: Config) -> Path | None:
    """The separate agents file, resolved against the config directory, or None."""
    if not config.team.file:
        return None
    path = Path(config.team.file)
    return path if path.is_absolute() else Path(config.source_path or ".") / path


class Team:
    """The current agents; :meth:`reload` swaps them atomically, keeping the old on error."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._agents = load_agents(config)
        self._mtime = self._file_mtime()

    @property
    def agents(self) -> tuple[AgentConfig, ...]:
        """The agents as of the last successful load."""
        with self._lock:
            return self._agents

    def addresses(self) -> tuple[str, ...]:
        """Agent addresses, lower-case."""
        return tuple(a.address for a in self.agents)

    def get(self, address: str) -> AgentConfig | None:
        """The agent with this address, or None."""
        return next((a for a in self.agents if a.address == address.lower()), None)

    def reload(self, config: Config | None = None) -> bool:
        """Re-read the agents, from ``config`` when the config file itself was read again;
        on a bad agents file log the error and keep the current agents (and config)."""
        config = config or self.config
        try:
            agents = load_agents(config)
        except ConfigError as exc:
            log.error("agents not reloaded, keeping the current ones: %s", exc)
            return False
        with self._lock:
            self.config = config
            self._agents = agents
            self._mtime = self._file_mtime()
        log.info("agents reloaded: %s", ", ".join(a.address for a in agents) or "none")
        return True

    def reload_if_changed(self) -> bool:
        """Reload when the agents file's modification time changed (a periodic job).

        A broken file is reported once per change, not at every check.
        """
        mtime = self._file_mtime()
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        return self.reload()

    def _file_mtime(self) -> float | None:
        path = agents_file(self.config)
        try:
            return path.stat().st_mtime if path else None
        except OSError:
            return None


# Keys of a re-read config that take effect at once: read whenever a mail, job or page is
# handled (a whole section, or "section.key").  Any other change waits for a restart.
RELOADABLE = (
    "service.language", "service.log_level", "support.name", "tickets", "outbox", "hygiene",
    "team", "directory", "notifications.statuses", "notifications.coalesce_seconds",
    "notifications.warning_minutes", "notifications.waiting_reminder_days",
    "notifications.auto_close_days", "policy", "facts", "trust", "spam", "retention",
    "web.base_url", "web.escalation_notice_de", "web.escalation_notice_en",
    "web.max_source_failures",
)


@dataclasses.dataclass(frozen=True)
class Reloaded:
    """A re-read config as it goes into force: the running values kept for the keys that
    need a restart; which changed keys apply now, which wait."""

    config: Config
    applied: tuple[str, ...]
    restart: tuple[str, ...]


def reloaded(running: Config, read: Config) -> Reloaded:
    """What of ``read`` (the config file read again) goes into force in place of ``running``."""
    changed = changed_keys(running, read)
    restart = tuple(k for k in changed if not _reloadable(k))
    config = read
    for key in restart:
        section, _, name = key.partition(".")
        kept = getattr(running, section)
        if name:
            kept = dataclasses.replace(getattr(config, section), **{name: getattr(kept, name)})
        config = dataclasses.replace(config, **{section: kept})
    return Reloaded(config, tuple(k for k in changed if _reloadable(k)), restart)


def changed_keys(old: Config, new: Config) -> tuple[str, ...]:
    """The keys whose values differ, as "section.key" ("section" for a list like [[imap]])."""
    keys = []
    for field in dataclasses.fields(Config):
        before, after = getattr(old, field.name), getattr(new, field.name)
        if before == after or field.name == "source_path":
            continue
        if dataclasses.is_dataclass(before) and type(before) is type(after):
            keys += [f"{field.name}.{f.name}" for f in dataclasses.fields(before)
                     if getattr(before, f.name) != getattr(after, f.name)]
        else:
            keys.append(field.name)
    return tuple(keys)


def _reloadable(key: str) -> bool:
    return key in RELOADABLE or key.partition(".")[0] in RELOADABLE
