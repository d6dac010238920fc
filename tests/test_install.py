"""Install anywhere: the wheel works outside the checkout, in a fresh venv and with
`pip install --user`, from an unrelated working directory.

The wheel is built once per module, offline, from a copy of the sources.  The new venv and
the user site reach the dependencies already installed in the test venv through a .pth
file, so nothing is downloaded; the checkout is never on their import path.  A mail filed
through the installed `mailbot ingest` is acknowledged with the installed templates (the
acknowledgement is read from the outbox, where it waits composed for the sender).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon_util import REPO
from mails import build_mail

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
DEPENDENCIES = sysconfig.get_path("purelib")  # the test venv's packages
BASE_PYTHON = sys._base_executable  # the interpreter the test venv was made from


@dataclass(frozen=True)
class Installed:
    """One installation of the wheel: where its `mailbot` script lies, the interpreter
    that imports it, and the environment both need."""

    scripts: Path
    python: Path
    env: dict[str, str]


def _run(args: list, env: dict[str, str] | None = None, cwd: Path | None = None,
         input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; fail the test with its output unless it exits 0."""
    done = subprocess.run([str(a) for a in args], env=env, cwd=cwd, input=input,
                          capture_output=True, timeout=120, check=False)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{out}\n{err}"
    return subprocess.CompletedProcess(done.args, 0, out, err)


def _pip(*args: object, env: dict[str, str] | None = None) -> None:
    """The test venv's pip, offline, without the dependencies (they are reached by .pth)."""
    _run([sys.executable, "-m", "pip", *args, "--quiet", "--no-deps", "--no-index",
          "--disable-pip-version-check"], env=env)


def _environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without anything that points at the checkout or a config."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "MAILBOT_CONFIG", "MAILBOT_SECRET", "PYTHONUSERBASE")}
    return {**env, **(extra or {})}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built offline from a copy of the sources (so the checkout gets
    no build/ or egg-info), with the test venv's setuptools."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO / "mailbot", source / "mailbot",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "--no-index", "--disable-pip-version-check", "-w", root, source])
    [built] = root.glob("mailbot-*.whl")
    return built


def into_venv(wheel: Path, root: Path) -> Installed:
    """`pip install mailbot-*.whl` into a fresh venv made from the base interpreter."""
    venv = root / "venv"
    _run([BASE_PYTHON, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    Path(purelib.stdout.strip(), "dependencies.pth").write_text(DEPENDENCIES + "\n")
    _pip("--python", python, "install", wheel)
    return Installed(venv / "bin", python, _environment())


def as_user(wheel: Path, root: Path) -> Installed:
    """`pip install --user mailbot-*.whl` for the base interpreter, the user base in ``root``."""
    env = _environment({"PYTHONUSERBASE": str(root / "user")})
    _pip("--python", BASE_PYTHON, "install", "--user", "--no-warn-script-location", wheel,
         env=env)
    site = _run([BASE_PYTHON, "-c", "import site; print(site.getusersitepackages())"], env=env)
    Path(site.stdout.strip(), "dependencies.pth").write_text(DEPENDENCIES + "\n")
    return Installed(root / "user" / "bin", Path(BASE_PYTHON), env)


@pytest.mark.parametrize("install", [into_venv, as_user], ids=["venv", "user"])
def test_the_installed_wheel_works_from_any_directory(
        wheel: Path, tmp_path: Path, install: Callable[[Path, Path], Installed]) -> None:
    """Installed from the wheel, mailbot knows its version, writes a config with `init`,
    checks it, files a mail and acknowledges it with the templates it was installed with,
    all from a directory that has nothing to do with the checkout."""
    installed = install(wheel, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def mailbot(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        return _run([installed.scripts / "mailbot", *args], env=installed.env, cwd=elsewhere,
                    input=input)

    assert mailbot("--version").stdout == f"mailbot {VERSION}\n"
    where = _run([installed.python, "-c", "import mailbot.settings.config as c, mailbot; "
                  "print(mailbot.__file__); print(c.Config().templates_dir)"],
                 env=installed.env, cwd=elsewhere).stdout.split()
    assert [Path(p).is_relative_to(tmp_path) for p in where] == [True, True], where
    assert not any(Path(p).is_relative_to(REPO) for p in where), where

    mailbot("init", "conf")
    config = ("--config", "conf/mailbot.toml")
    assert mailbot(*config, "check-config").stdout.startswith("config OK")
    filed = mailbot(*config, "ingest", input=build_mail(subject="Drucker druckt nicht"))
    assert filed.stdout.startswith("stdin: created "), filed.stdout
    number = filed.stdout.split()[-1]

    database = elsewhere / "conf" / "data" / "mailbot.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        [(raw,)] = db.execute("SELECT raw FROM outbox WHERE kind = 'acknowledgement'")
    ack = email.message_from_bytes(raw, policy=email.policy.default)
    assert ack["Subject"] == f"[Ticket#{number}] Drucker druckt nicht"
    assert number in ack.get_content()  # the body comes from the installed template alone
