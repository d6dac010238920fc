"""Build frozen dataclasses from parsed TOML, reporting every error with its key path.

The schema is the dataclasses themselves: field names are the keys, type hints the
types, defaults the defaults.  A secret field (``Annotated[str, SECRET]``) accepts a
plain string or a table ``{ env = "NAME" }`` / ``{ file = "/path" }`` so passwords
need not live in the TOML file.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

SECRET = "secret"  # noqa: S105 - a marker, not a secret
Secret = Annotated[str, SECRET]


class ConfigError(Exception):
    """A config value is missing, unknown or wrong; the message names the key and the fix."""

    def __init__(self, path: str, reason: str, source: str = "") -> None:
        self.path = path
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{path or '(top level)'}: {reason}")


def build(cls: type, data: Any, path: str = "") -> Any:
    """Instantiate dataclass ``cls`` from TOML data, validating every key recursively."""
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a table, got {_kind(data)}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(_join(path, unknown[0]),
                          f"unknown key; known keys are: {', '.join(sorted(fields))}")
    values = {}
    for name, fld in fields.items():
        key = _join(path, name)
        if name in data:
            values[name] = convert(hints[name], data[name], key)
        elif fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING:
            raise ConfigError(key, "required value is missing")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(path, str(exc)) from exc


def convert(hint: Any, value: Any, path: str) -> Any:
    """Check ``value`` against type ``hint`` and convert it (lists to tuples, tables to objects)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        if SECRET in args[1:]:
            return resolve_secret(value, path)
        return convert(args[0], value, path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(path, f"must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        return _convert_union(args, value, path)
    if origin is tuple:
        return _convert_tuple(args, value, path)
    if origin is dict:
        return _convert_dict(args, value, path)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    return _convert_scalar(hint, value, path)


def resolve_secret(value: Any, path: str) -> str:
    """A secret given inline, as ``{ env = NAME }`` or as ``{ file = PATH }``."""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or len(value) != 1 or not ({"env", "file"} & set(value)):
        raise ConfigError(path, 'expected a string, { env = "NAME" } or { file = "/path" }')
    if "env" in value:
        name = str(value["env"])
        if name not in os.environ:
            raise ConfigError(path, f"environment variable {name} is not set")
        return os.environ[name]
    try:
        return Path(str(value["file"])).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(path, f"cannot read secret file: {exc.strerror}") from exc


def _convert_union(args: tuple, value: Any, path: str) -> Any:
    errors = []
    for option in args:
        if option is type(None):
            continue
        try:
            return convert(option, value, path)
        except ConfigError as exc:
            errors.append(exc.reason)
    raise ConfigError(path, " or ".join(errors))


def _convert_tuple(args: tuple, value: Any, path: str) -> tuple:
    if not isinstance(value, list):
        raise ConfigError(path, f"expected a list, got {_kind(value)}")
    item = args[0] if args else Any
    return tuple(convert(item, v, f"{path}[{i}]") for i, v in enumerate(value))


def _convert_dict(args: tuple, value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(path, f"expected a table, got {_kind(value)}")
    item = args[1] if len(args) == 2 else Any
    return {str(k): convert(item, v, _join(path, str(k))) for k, v in value.items()}


def _convert_scalar(hint: Any, value: Any, path: str) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(path, "expected an integer, got a boolean")
    if not isinstance(value, hint):
        raise ConfigError(path, f"expected {_name(hint)}, got {_kind(value)}")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
             list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _name(hint: Any) -> str:
    names = {str: "a string", bool: "a boolean (true/false)", int: "an integer",
             float: "a number"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
