"""Real loopback servers for mailbot's end-to-end tests: a throwaway Dovecot and an SMTP sink.

Plain classes, no pytest: `tests/conftest.py` wraps them in fixtures, benchmarks can use them
directly. Everything listens on 127.0.0.1 only and lives in its own temp dir.
"""

from __future__ import annotations

import atexit
import contextlib
import email
import email.policy
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import TypeVar

from aiosmtpd.controller import Controller
from imapclient import IMAPClient

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
DOVECOT_CANDIDATES = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
DOVECOT_INSTALL_HINT = (
    "Dovecot 2.3 is needed for the end-to-end tests but was not found "
    "(looked on PATH and in {paths}). Run the suite with `bash tests/run.sh`, which installs "
    "it, or install it yourself: `apt-get install -y --no-install-recommends dovecot-imapd`."
)
USERNAME = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9._@-]*")  # Dovecot's auth_username_chars
DEFAULT_PASSWORD = "secret"
APPENDUID = re.compile(rb"APPENDUID \d+ ([0-9:,]+)")


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on `host` that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until(
    predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.02, message: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy and return that value.

    Raises AssertionError naming `message` (or the predicate) when `timeout` seconds pass.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: its timed wait is the poll interval
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for: {what}")
        pause.wait(interval)


# --------------------------------------------------------------------------------------------
# Dovecot
# --------------------------------------------------------------------------------------------

def self_signed_certificate(folder: Path, host: str = LOOPBACK) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for ``host`` made with openssl: (cert, key)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    key.chmod(0o644)
    return cert, key


CONFIG_TEMPLATE = """\
# Throwaway Dovecot for mailbot tests; everything lives under {root}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = {host}
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = yes
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:~/Maildir
mail_fsync = never
mail_max_userip_connections = 200
{unprivileged}
namespace inbox {{
  inbox = yes
}}
# No growing delay (up to 15 s) for every login from 127.0.0.1 after a failed one.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd.d/%u
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    address = {host}
    port = {tls_port}
  }}
}}
"""

UNPRIVILEGED_SETTINGS = """\
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""


@dataclass(frozen=True)
class ImapAccount:
    """Where and as whom a test logs in to the test IMAP server."""

    host: str
    port: int
    username: str
    password: str


@dataclass(frozen=True)
class MailOwner:
    """The system user that owns the mail files (`mail` as root, else the current user)."""

    user: str
    group: str
    uid: int
    gid: int

    @classmethod
    def for_current_process(cls) -> MailOwner:
        """Pick `mail:mail` when running as root (Dovecot refuses uid 0), else ourselves."""
        if os.geteuid() == 0:
            pw, gr = pwd.getpwnam("mail"), grp.getgrnam("mail")
        else:
            pw, gr = pwd.getpwuid(os.getuid()), grp.getgrgid(os.getgid())
        return cls(pw.pw_name, gr.gr_name, pw.pw_uid, gr.gr_gid)


def find_dovecot() -> str:
    """Return the path of the dovecot binary, or raise RuntimeError saying how to install it."""
    found = shutil.which("dovecot") or next(
        (p for p in DOVECOT_CANDIDATES if os.access(p, os.X_OK)), None
    )
    if not found:
        raise RuntimeError(DOVECOT_INSTALL_HINT.format(paths=", ".join(DOVECOT_CANDIDATES)))
    return found


class Dovecot:
    """A private Dovecot 2.3 IMAP server on 127.0.0.1, configured and run from a temp dir.

    Users can be added before or after `start()`; a changed password may take a second.
    `close()` stops the server and removes the temp dir; use it as a context manager.
    """

    def __init__(self, host: str = LOOPBACK, port: int | None = None, tls: bool = False) -> None:
        self.binary = find_dovecot()
        self.host = host
        self.port = port or free_port(host)
        self.tls = tls
        self.tls_port = free_port(host) if tls else 0
        self.owner = MailOwner.for_current_process()
        self.root = Path(tempfile.mkdtemp(prefix="mailbot-dovecot-"))
        self.config_path = self.root / "dovecot.conf"
        self._users: dict[str, str] = {}
        self._user_serial = 0
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._prepare_dirs()
        if tls:
            self._make_certificate()
        atexit.register(self.close)
        self.config_path.write_text(self._render_config())

    # -- files -------------------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        """Make the temp dir traversable for Dovecot's auth user and the mail dir its owner's."""
        self.root.chmod(0o755)
        mail = self.root / "mail"
        mail.mkdir()
        os.chown(mail, self.owner.uid, self.owner.gid)

    def _render_config(self) -> str:
        """Return dovecot.conf for this instance."""
        unprivileged = ""
        if os.geteuid() != 0:
            unprivileged = UNPRIVILEGED_SETTINGS.format(
                user=self.owner.user, group=self.owner.group
            )
        ssl = "ssl = no"
        if self.tls:
            ssl = f"ssl = yes\nssl_cert = <{self.cert_path}\nssl_key = <{self.root / 'key.pem'}"
        return CONFIG_TEMPLATE.format(
            root=self.root,
            host=self.host,
            port=self.port,
            tls_port=self.tls_port,
            ssl=ssl,
            uid=self.owner.uid,
            gid=self.owner.gid,
            unprivileged=unprivileged,
        )

    @property
    def cert_path(self) -> Path:
        """The self-signed certificate (for 127.0.0.1) a TLS instance serves."""
        return self.root / "cert.pem"

    def _make_certificate(self) -> None:
        """A throwaway self-signed certificate for the server's address."""
        self_signed_certificate(self.root, self.host)

    def _write_passwd(self, name: str, password: str) -> None:
        """Write one user's passwd file atomically.

        One file per user (`passwd.d/%u`): Dovecot re-reads a changed passwd file at most once
        a second, but opens a file it has not seen at once, so new users can log in at once.
        """
        folder = self.root / "passwd.d"
        folder.mkdir(mode=0o755, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        tmp.write_text(f"{name}:{{PLAIN}}{password}::::::\n")
        tmp.chmod(0o644)
        tmp.replace(folder / name)

    def log_text(self) -> str:
        """Return Dovecot's log so far (handy in assertion messages)."""
        log = self.root / "dovecot.log"
        return log.read_text(errors="replace") if log.exists() else ""

    # -- users -------------------------------------------------------------------------------

    def add_user(self, name: str, password: str) -> ImapAccount:
        """Create (or re-password) a mail user; works before and after `start()`."""
        if not USERNAME.fullmatch(name) or re.search(r"[:\s]", password):
            raise ValueError(f"unusable IMAP test credentials: {name!r} / {password!r}")
        with self._lock:
            self._users[name] = password
            self._write_passwd(name, password)
        return self.account(name)

    def new_user(self, prefix: str = "u", password: str = DEFAULT_PASSWORD) -> ImapAccount:
        """Create a user with a name not used before in this instance (u1, u2, ...)."""
        with self._lock:
            self._user_serial += 1
            name = f"{prefix}{self._user_serial}"
        return self.add_user(name, password)

    def account(self, name: str) -> ImapAccount:
        """Return the connection data of an existing user."""
        return ImapAccount(self.host, self.port, name, self._users[name])

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the Dovecot master process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The master process's id (0 when it is not started): a benchmark counts the CPU
        of the processes below it."""
        return self._process.pid if self._process is not None else 0

    def start(self, timeout: float = 15.0) -> None:
        """Start Dovecot in the foreground as our child and wait until it greets."""
        if self.running:
            return
        with open(self.root / "stderr.log", "ab") as stderr:
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _command(self) -> list[str]:
        """Return the command line; from the main thread the server dies with this process."""
        command = [self.binary, "-F", "-c", str(self.config_path)]
        setpriv = shutil.which("setpriv")
        # PDEATHSIG fires when the *thread* that forked exits: only safe from the main thread.
        if setpriv and threading.current_thread() is threading.main_thread():
            command = [setpriv, "--pdeathsig", "TERM", *command]
        return command

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until the IMAP port answers with a greeting; raise with the log if it fails."""
        deadline = time.monotonic() + timeout

        def greets() -> bool:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"Dovecot is not running:\n{self._diagnostics()}")
            return self._greets(deadline)

        try:
            wait_until(greets, timeout, interval=0.01, message="Dovecot's greeting")
        except AssertionError as exc:
            raise RuntimeError(f"Dovecot did not greet within {timeout}s:\n"
                               f"{self._diagnostics()}") from exc

    def _greets(self, deadline: float) -> bool:
        """Return True if a TCP connect to the IMAP port gets an `* OK` greeting."""
        try:
            remaining = max(deadline - time.monotonic(), 0.05)
            with socket.create_connection((self.host, self.port), timeout=remaining) as sock:
                return sock.recv(1024).startswith(b"* OK")
        except OSError:
            return False

    def _diagnostics(self) -> str:
        """Return stderr and the log tail for error messages."""
        stderr_log = self.root / "stderr.log"
        stderr = stderr_log.read_text(errors="replace") if stderr_log.exists() else ""
        return f"stderr: {stderr.strip()}\nlog tail:\n{self.log_text()[-3000:]}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Dovecot (`dovecot stop`, then signals if needed); safe to call twice."""
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None:
                self._request_stop(process, timeout)
        except subprocess.TimeoutExpired:
            pass  # the SIGKILL below ends it
        finally:
            self._kill_group()  # a hung master, or stragglers of a stopped one
            process.wait(timeout)
            self._process = None

    def _request_stop(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        """Run `dovecot stop` and reap the master meanwhile.

        `dovecot stop` polls until the master's pid is gone, and an unreaped zombie still
        counts: waiting on the master first turns a 3 s stop into the master's own ~1 s.
        """
        command = [self.binary, "-c", str(self.config_path), "stop"]
        stopper = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout)
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                stopper.wait(timeout)
            stopper.kill()  # a no-op once it has exited

    def _kill_group(self) -> None:
        """SIGKILL the whole process group of our Dovecot master (it leads its own session)."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)

    def kill(self) -> None:
        """Crash the server: SIGKILL every Dovecot process at once (no clean shutdown)."""
        if self._process is not None:
            self._kill_group()
            self._process.wait()
            self._process = None

    def restart(self, timeout: float = 15.0, crash: bool = False) -> None:
        """Stop (or `kill()` if `crash`) and start again on the same port, keeping the mail."""
        if crash:
            self.kill()
        else:
            self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Kill the server and delete its temp dir with all mail (no 1 s clean shutdown)."""
        try:
            self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            atexit.unregister(self.close)

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- client helpers ----------------------------------------------------------------------

    @contextlib.contextmanager
    def connect(self, user: str, timeout: float = 10.0) -> Iterator[IMAPClient]:
        """Yield an IMAPClient logged in as `user`; logs out afterwards."""
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
        try:
            client.login(user, self._users[user])
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append(self, user: str, folder: str, raw: bytes, flags: Iterable[str | bytes] = ()) -> int:
        """Append one raw message to `folder` and return its UID."""
        with self.connect(user) as client:
            return _appended_uids(client.append(folder, raw, flags=tuple(flags)))[0]

    def append_many(
        self, user: str, folder: str, messages: Iterable[bytes], batch: int = 500
    ) -> list[int]:
        """Append many raw messages with MULTIAPPEND (fast: ~0.1 ms each); return their UIDs."""
        pending, uids = list(messages), []
        with self.connect(user) as client:
            for start in range(0, len(pending), batch):
                answer = client.multiappend(folder, pending[start : start + batch])
                uids += _appended_uids(answer[1][0] if isinstance(answer, tuple) else answer)
        return uids

    def create_folder(self, user: str, folder: str) -> None:
        """Create `folder` for `user` unless it exists already."""
        with self.connect(user) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)

    def folder_exists(self, user: str, folder: str) -> bool:
        """Return True if `user` has a folder named `folder`."""
        with self.connect(user) as client:
            return client.folder_exists(folder)

    def list_uids(self, user: str, folder: str = "INBOX") -> list[int]:
        """Return the UIDs in `folder`, ascending."""
        with self.connect(user) as client:
            client.select_folder(folder, readonly=True)
            return sorted(client.search("ALL"))

    def fetch_all(self, user: str, folder: str = "INBOX") -> list[bytes]:
        """Return the raw bytes of every message in `folder`, by ascending UID; sets no flags."""
        with self.connect(user) as client:
            client.select_folder(folder, readonly=True)
            fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[]"])
            return [fetched[uid][b"BODY[]"] for uid in sorted(fetched)]

    def message_count(self, user: str, folder: str = "INBOX") -> int:
        """Return how many messages `folder` holds."""
        with self.connect(user) as client:
            return client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"]


def _appended_uids(response: bytes) -> list[int]:
    """Return the UIDs named in an APPEND's `[APPENDUID validity uid-set]` answer."""
    match = APPENDUID.search(response)
    if not match:
        raise AssertionError(f"APPEND answer without APPENDUID: {response!r}")
    uids: list[int] = []
    for part in match.group(1).decode().split(","):
        first, _, last = part.partition(":")
        uids.extend(range(int(first), int(last or first) + 1))
    return uids


# --------------------------------------------------------------------------------------------
# SMTP sink
# --------------------------------------------------------------------------------------------

SMTP_STAGES = ("MAIL", "RCPT", "DATA")


@dataclass(frozen=True)
class ReceivedMail:
    """One message the sink accepted: envelope, raw bytes (CRLF) and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage

    @property
    def subject(self) -> str:
        """The decoded Subject header ("" if missing)."""
        return str(self.message.get("Subject", ""))

    def summary(self) -> str:
        """One line for assertion messages."""
        return f"from={self.mail_from} to={list(self.rcpt_tos)} subject={self.subject!r}"


class _SinkHandler:
    """aiosmtpd hooks that consult the sink for scripted refusals and store accepted mail."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        """Accept the sender unless a failure is scripted for MAIL."""
        refusal = self.sink._take_failure("MAIL")
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        """Accept a recipient unless it is in `reject_rcpt` or a RCPT failure is scripted."""
        refusal = self.sink._rcpt_refusal(address) or self.sink._take_failure("RCPT")
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        """Store the message unless a DATA failure is scripted."""
        refusal = self.sink._take_failure("DATA")
        if refusal:
            return refusal
        self.sink._store(envelope.mail_from, envelope.rcpt_tos, envelope.original_content)
        self.sink._peers.add(session.peer)
        return "250 OK: queued"


class SmtpSink:
    """An aiosmtpd SMTP server on 127.0.0.1 that keeps every message it accepts.

    `reject_rcpt` maps recipient addresses (case-insensitive) to the reply they get, e.g.
    `{"bad@example.com": "550 5.1.1 no such user"}`; `fail_next()` scripts temporary failures.
    `stop()`/`start()` keep the port, to simulate the relay being down.
    """

    def __init__(
        self,
        host: str = LOOPBACK,
        port: int | None = None,
        reject_rcpt: dict[str, str] | None = None,
        tls_files: tuple[Path, Path] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.tls_files = tls_files  # (certificate, key): offer STARTTLS and require it
        self.reject_rcpt = {k.lower(): v for k, v in (reject_rcpt or {}).items()}
        self.refusals: list[tuple[str, str]] = []  # (stage, reply) actually sent, for dumps
        self._messages: list[ReceivedMail] = []
        self._failures: list[tuple[str, str]] = []  # scripted (stage, reply), used in order
        self._changed = threading.Condition()
        self._controller: Controller | None = None
        self._peers: set[tuple] = set()  # client (host, port) of each accepted mail

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on the sink's port (again); returns once the server accepts connections."""
        if self._controller is None:
            controller = Controller(
                _SinkHandler(self),
                hostname=self.host,
                port=self.port,
                enable_SMTPUTF8=True,
                ready_timeout=10.0,
                **self._tls_options(),
            )
            controller.start()
            self._controller = controller

    def _tls_options(self) -> dict:
        """aiosmtpd options that offer and require STARTTLS with the sink's certificate."""
        if self.tls_files is None:
            return {}
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*map(str, self.tls_files))
        return {"tls_context": context, "require_starttls": True}

    def stop(self) -> None:
        """Stop listening; connections are refused until `start()`. Safe to call twice."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    @property
    def connections(self) -> int:
        """How many client connections delivered at least one accepted mail."""
        return len(self._peers)

    @property
    def running(self) -> bool:
        """True while the sink accepts connections."""
        return self._controller is not None

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- scripting ---------------------------------------------------------------------------

    def reject(self, address: str, reply: str = "550 5.1.1 no such user") -> None:
        """Answer RCPT TO:<address> with `reply` from now on (like `reject_rcpt=`)."""
        self.reject_rcpt[address.lower()] = reply

    def fail_next(self, n: int = 1, code: str = "451 4.3.0 try later", stage: str = "DATA") -> None:
        """Answer the next `n` transactions with `code` at `stage` (MAIL, RCPT or DATA)."""
        if stage not in SMTP_STAGES:
            raise ValueError(f"stage must be one of {SMTP_STAGES}, not {stage!r}")
        with self._changed:
            self._failures.extend([(stage, code)] * n)

    def _take_failure(self, stage: str) -> str | None:
        """Return and use up the next scripted reply if it is for `stage`."""
        with self._changed:
            if self._failures and self._failures[0][0] == stage:
                reply = self._failures.pop(0)[1]
                self.refusals.append((stage, reply))
                return reply
        return None

    def _rcpt_refusal(self, address: str) -> str | None:
        """Return the configured reply for a rejected recipient, recording it."""
        reply = self.reject_rcpt.get(address.lower())
        if reply:
            with self._changed:
                self.refusals.append((f"RCPT {address}", reply))
        return reply

    # -- received mail -----------------------------------------------------------------------

    def _store(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> None:
        """Record one accepted message and wake up waiters."""
        # Parsed from LF line ends: with CRLF, get_content() would keep a "\r" on every line.
        parsed = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
        mail = ReceivedMail(mail_from, tuple(rcpt_tos), raw, parsed)  # type: ignore[arg-type]
        with self._changed:
            self._messages.append(mail)
            self._changed.notify_all()

    @property
    def messages(self) -> list[ReceivedMail]:
        """A snapshot of every message accepted so far, in arrival order."""
        with self._changed:
            return list(self._messages)

    def clear(self) -> None:
        """Forget the messages and refusals seen so far (scripted failures stay)."""
        with self._changed:
            self._messages.clear()
            self.refusals.clear()

    def wait_for(
        self,
        predicate: Callable[[ReceivedMail], bool] | None = None,
        timeout: float = 10.0,
        count: int = 1,
    ) -> list[ReceivedMail]:
        """Wait until at least `count` accepted messages match `predicate`; return them all.

        Raises AssertionError listing what did arrive if `timeout` seconds pass first.
        """
        match = predicate or (lambda _mail: True)
        with self._changed:
            found = self._changed.wait_for(
                lambda: len([m for m in self._messages if match(m)]) >= count, timeout
            )
            matching = [m for m in self._messages if match(m)]
            if found:
                return matching
            raise AssertionError(self._dump(count, len(matching), timeout))

    def _dump(self, wanted: int, matched: int, timeout: float) -> str:
        """Describe what arrived, for a failed `wait_for`."""
        lines = [f"waited {timeout:.1f}s for {wanted} matching mail(s), {matched} matched;"]
        lines.append(f"{len(self._messages)} received:")
        lines += [f"  {m.summary()}" for m in self._messages] or ["  (none)"]
        lines += [f"  refused at {stage}: {reply}" for stage, reply in self.refusals]
        return "\n".join(lines)
