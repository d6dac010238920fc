"""The refresh token of a delegated sign-in, kept in one file under the data directory.

Microsoft and Google may answer a refresh with a new refresh token and revoke the old one,
so the newest must survive a restart: it is written atomically (a temporary file, fsync,
rename), mode 0600 in a 0700 directory, before the access token that came with it is used.
The file remembers the client and the configured ``refresh_token`` it descends from: once
an operator configures another client or pastes a new refresh token, the stored one no
longer counts.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from mailbot.settings.config import OAuth2Config
from mailbot.store.blobs import replace_private


def current(settings: OAuth2Config) -> str:
    """The refresh token to use now: the stored (newest) one, else the configured one."""
    stored = _read(Path(settings.token_file)) if settings.token_file else {}
    if stored.get("client_id") == settings.client_id and stored.get("origin") == _origin(
            settings) and stored.get("refresh_token"):
        return str(stored["refresh_token"])
    return settings.refresh_token


def save(settings: OAuth2Config, refresh_token: str) -> Path:
    """Store ``refresh_token`` for this table (0600, atomically); the file's path."""
    path = Path(settings.token_file)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    record = {"refresh_token": refresh_token, "client_id": settings.client_id,
              "origin": _origin(settings),
              "saved_at": datetime.now(UTC).isoformat(timespec="seconds")}
    replace_private(path, json.dumps(record), sync=True)
    return path


def _read(path: Path) -> dict:
    """The stored record, or {} when there is none (or it is unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _origin(settings: OAuth2Config) -> str:
    """A fingerprint of the configured refresh token (never the token itself)."""
    return hashlib.sha256(settings.refresh_token.encode()).hexdigest()[:16]
