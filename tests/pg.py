"""A throwaway PostgreSQL server for the test session: initdb and pg_ctl from the
distribution's package in a temp dir of its own, on a free port; never the distribution's
cluster.  Each test gets a database copied from a template that was migrated once.

As root, the server runs as the ``postgres`` user (initdb and postgres refuse root); its
directory is made with mkdtemp (pytest's tmp_path is not reachable for that user).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import psycopg
from psycopg import sql

from mailbot.store import Store

USER, PASSWORD = "mailbot", "mailbot-test-pw"
TEMPLATE = "mailbot_template"


def bindir() -> Path | None:
    """Where initdb and pg_ctl are: $PG_BINDIR, the newest Debian version, or PATH."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).resolve().parent if which else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL server in a temp dir, its admin connection, and per-test databases."""

    def __init__(self, binaries: Path) -> None:
        self.bindir = binaries
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pg-"))  # short: the socket lives in it
        self.data = self.root / "data"
        self.as_root = os.geteuid() == 0
        self._made = 0
        self._names = threading.Lock()
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, cwd=self.root, check=True, capture_output=True, text=True)

    def start(self) -> PgServer:
        """initdb, start (pg_ctl waits until it accepts connections), the template made."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.root}'\nmax_connections = 200\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-w", "-t", "60", "start")
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(USER), sql.Literal(PASSWORD)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(TEMPLATE), sql.Identifier(USER)))
        Store(self.url(TEMPLATE)).close()  # migrated once; copies need no migration
        return self

    def admin(self) -> psycopg.Connection:
        """The superuser over the unix socket (autocommit: CREATE DATABASE needs it)."""
        return psycopg.connect(host=str(self.root), port=self.port, user="postgres",
                               dbname="postgres", autocommit=True)

    def url(self, name: str) -> str:
        """The URL of database ``name`` as mailbot is given it: TCP, user and password."""
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{name}"

    def new_database(self) -> str:
        """A fresh database at the current schema (a copy of the template); its URL."""
        with self._names:
            self._made += 1
            name = f"t{os.getpid()}_{self._made}"
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE), sql.Identifier(USER)))
        return self.url(name)

    def empty_database(self) -> str:
        """A fresh database without any table; its URL."""
        with self._names:
            self._made += 1
            name = f"e{os.getpid()}_{self._made}"
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(USER)))
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once and remove its directory (the data is throwaway)."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
