"""What a config needs from this machine, checked before anything starts.

A loaded config is well-formed; these checks ask whether the machine can serve it: the
data directory can be created and written, the templates of every language are there and
parse, the CA files can be read (:func:`blockers`), and the outbound Maildir can be
written (:func:`problems` adds it).  `mailbot run` refuses to start on a blocker, so the
daemon never dies half-started on one: it exits 78 with file, key and reason, as for any
config error.  An unwritable Maildir does not stop it: like a relay that is down, mail
waits in the outbox and /healthz says why; `mailbot check-config` reports both kinds.

Run it as the user the service runs as (``sudo -u mailbot mailbot check-config``): what
root may write says nothing about what that user may.
"""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import jinja2

from mailbot.settings.config import Config
from mailbot.settings.schema import ConfigError

Problem = tuple[str, str]  # the key, and the reason


def blockers(config: Config, source: str, languages: tuple[str, ...]) -> list[ConfigError]:
    """Everything on this machine that stops the daemon with this config, each naming the
    config file ``source``, the key and the reason; empty when it can start."""
    found = list(_writable_directory("service.data_dir", config.data_dir))
    found += _templates("service.templates_dir", config.templates_dir, languages)
    files = [(f"imap[{i}].ca_file", c.ca_file) for i, c in enumerate(config.imap)]
    files.append(("relay.ca_file", config.relay.ca_file))
    found += [problem for key, path in files if path for problem in _readable(key, Path(path))]
    return [ConfigError(key, reason, source) for key, reason in found]


def problems(config: Config, source: str, languages: tuple[str, ...]) -> list[ConfigError]:
    """The :func:`blockers`, and an outbound Maildir that cannot be written (mail would
    wait in the outbox); empty when the config works on this machine."""
    found = blockers(config, source, languages)
    if not config.relay.host and config.relay.maildir:  # else it lies in the data directory
        found += [ConfigError(key, reason, source)
                  for key, reason in _writable_directory("relay.maildir", config.maildir)]
    return found


def _writable_directory(key: str, path: Path) -> Iterator[Problem]:
    """``path`` is a directory we can write in, or one we can create; what it holds
    already (database, spool) is ours to write too."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        yield key, f"{existing} is not a directory"
        return
    try:
        if existing == path:
            tempfile.TemporaryFile(dir=path).close()
        else:
            os.rmdir(tempfile.mkdtemp(dir=existing))
    except OSError as exc:
        verb = "write in" if existing == path else "create"
        yield key, f"cannot {verb} {path}: {exc.strerror or exc}"
        return
    for entry in path.iterdir() if existing == path else ():
        if not os.access(entry, os.W_OK | (os.X_OK if entry.is_dir() else 0)):
            yield key, (f"cannot write {entry} (owner uid {entry.lstat().st_uid}): the data "
                        "must belong to the user mailbot runs as")


def _templates(key: str, directory: Path, languages: tuple[str, ...]) -> Iterator[Problem]:
    """Every template mailbot ships is in ``directory`` for each language, and parses."""
    names = sorted(_shipped_templates())
    if not directory.is_dir() or not names:
        yield key, f"{directory} holds no templates (mail/ and web/ for {', '.join(languages)})"
        return
    wanted = [f"{language}/{name}" for language in languages for name in names]
    missing = [name for name in wanted if not (directory / name).is_file()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        yield key, f"{directory} lacks {', '.join(missing[:3])}{more}"
    for name in wanted:
        if name not in missing:
            yield from _parses(key, directory, name)


def _shipped_templates() -> set[str]:
    """The templates mailbot ships, as ``mail/<name>`` and ``web/<name>``, any language."""
    shipped = resources.files("mailbot") / "templates"
    return {f"{part.name}/{file.name}" for language in _folders(shipped)
            for part in _folders(language) for file in part.iterdir() if file.is_file()}


def _folders(folder: Traversable) -> list[Traversable]:
    return [entry for entry in folder.iterdir() if entry.is_dir()] if folder.is_dir() else []


def _parses(key: str, directory: Path, name: str) -> Iterator[Problem]:
    """A template that cannot be read or parsed would quarantine every mail that uses it."""
    try:
        # Parsed only, never rendered: escaping is the business of the real environments.
        jinja2.Environment().parse((directory / name).read_text(encoding="utf-8"))  # noqa: S701
    except jinja2.TemplateSyntaxError as exc:
        yield key, f"{directory / name} line {exc.lineno}: {exc.message}"
    except (OSError, UnicodeDecodeError) as exc:
        yield key, f"cannot read {directory / name}: {exc}"


def _readable(key: str, path: Path) -> Iterator[Problem]:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        yield key, f"cannot read {path}: {exc.strerror or exc}"


def network_cause(exc: BaseException) -> str:
    """Why a connection failed, in an operator's words: connection refused, host not
    found, timed out, TLS failure (with the reason), else the error as it came.

    No access token (an OAuth2 ``TokenError``, which carries its ``cause`` in words) is
    named as such first: its own cause may be a refused connection to the token endpoint,
    which must not read as if the mail server refused.
    """
    if isinstance(getattr(exc, "cause", None), str):
        return f"no OAuth2 token: {exc.cause}"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return f"host not found ({cause.strerror})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failure: {getattr(cause, 'verify_message', '') or cause.reason or cause}"
        if isinstance(cause, TimeoutError):
            return "timed out"
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {exc}"
