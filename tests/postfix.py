"""A throwaway Postfix for tests: mailbot behind a real MTA, and a real MTA as mailbot's relay.

:class:`Postfix` writes its own ``main.cf``/``master.cf`` into a temp dir (queue, data and
a ``maillog`` file there), listens with smtpd on a free loopback port, looks up no DNS,
routes each of its ``routes`` domains to mailbot (over LMTP, SMTP or the ``mailbot`` pipe
service) and relays everything else to a test's SMTP sink.  It is started with
``postfix -c DIR start`` and stopped the same way; nothing of the system's Postfix is used.

The pipe runs as the unprivileged ``PIPE_USER`` (pipe(8) refuses root) through a wrapper
script in the temp dir, so that user must be able to run the project's Python:
:func:`pipe_python` finds an interpreter that user can execute, or says why there is none.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import smtplib
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from daemon_util import DaemonProcess, Instance
from servers import LOOPBACK, SmtpSink, free_port, wait_until

POSTFIX = Path("/usr/sbin/postfix")
POSTQUEUE = Path("/usr/sbin/postqueue")
PIPE_USER = "nobody"
REPO = Path(__file__).resolve().parent.parent
QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)")
STATUS = re.compile(r" ([0-9A-Za-z]+): to=<[^>]*>.* status=(sent|deferred|bounced) ")

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
inet_interfaces = {host}
inet_protocols = ipv4
myhostname = postfix.test
mydestination =
relay_domains = {domains}
mynetworks = 127.0.0.0/8
transport_maps = inline:{{ {transports} }}
relayhost = [{host}]:{sink_port}
disable_dns_lookups = yes
smtp_host_lookup = native
lmtp_host_lookup = native
alias_maps =
local_recipient_maps =
smtputf8_enable = yes
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
mailbot_destination_recipient_limit = 1
"""

MASTER_CF = """\
{host}:{port} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
lmtp       unix  - - n -  - lmtp
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
mailbot    unix  - n n -  - pipe
  flags=DRq user={user} null_sender=
  argv={wrapper} ingest --sender ${{sender}} --recipient ${{recipient}}
"""

WRAPPER = """\
#!/bin/sh
# mailbot behind Postfix's pipe(8), run as {user}: the pipe's argv continues after --config.
cd {root} || exit 75
PYTHONPATH={pythonpath} exec {python} -m mailbot --config {config} "$@"
"""


def postfix_missing() -> str:
    """Why a Postfix of our own cannot run here ("" when it can): the skip reason of the tests."""
    if not POSTFIX.exists():
        return (f"Postfix is not installed ({POSTFIX} is missing): run `bash tests/run.sh`, "
                "which installs it unconfigured")
    if os.geteuid() != 0:
        return "a Postfix instance of its own must be started as root (postfix start needs it)"
    return ""


def run_as(user: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as ``user`` (we are root), output captured."""
    return subprocess.run(["runuser", "-u", user, "--", *command], capture_output=True,
                          text=True, timeout=30, check=False)


def pipe_python(user: str = PIPE_USER) -> tuple[str, str] | str:
    """The interpreter and PYTHONPATH with which ``user`` can run mailbot, or why none.

    The venv's own interpreter first (what an operator installs under /opt); when it lives
    where ``user`` cannot go (a pyenv under /root), the system's Python of the same version
    with the venv's site-packages on its path; when the checkout itself is closed to
    ``user``, that Python with a hard-linked mirror of the package and site-packages.
    """
    site = sysconfig.get_paths()["purelib"]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [(sys.executable, str(REPO)),
                  (f"/usr/bin/{version}", f"{REPO}:{site}")]
    for python, pythonpath in candidates:
        if _runs(user, python, pythonpath):
            return python, pythonpath
    mirror = _linked_mirror(site)  # the checkout sits where the user cannot go (a 0700 dir)
    if mirror is not None:
        pythonpath = f"{mirror / 'src'}:{mirror / 'site'}"
        if _runs(user, f"/usr/bin/{version}", pythonpath):
            return f"/usr/bin/{version}", pythonpath
    return (f"the pipe user {user!r} can run neither {sys.executable} (its interpreter is "
            f"{os.path.realpath(sys.executable)}) nor /usr/bin/{version} with the venv's "
            f"site-packages; the pipe tests need a Python that user may execute")


def _runs(user: str, python: str, pythonpath: str) -> bool:
    """Whether ``user`` can import mailbot with this interpreter and path."""
    probe = run_as(user, "env", f"PYTHONPATH={pythonpath}", python, "-c",
                   "import mailbot.app.cli")
    return probe.returncode == 0


def _linked_mirror(site: str) -> Path | None:
    """The package and the venv's site-packages as hard links in a readable temp dir.

    Hard links share the files (nothing is copied) and their modes (readable); only the
    directories are new, so the pipe user can reach them although the checkout's own path
    is closed to it.  Removed at exit (removing links never touches the originals).
    None when the temp dir is on another file system than the checkout.
    """
    mirror = Path(tempfile.mkdtemp(prefix="mailbot-pipe-python-"))
    mirror.chmod(0o755)
    atexit.register(shutil.rmtree, mirror, True)
    try:
        shutil.copytree(REPO / "mailbot", mirror / "src" / "mailbot", copy_function=os.link,
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(site, mirror / "site", copy_function=os.link,
                        ignore=shutil.ignore_patterns("__pycache__"))
    except OSError:
        return None
    for folder in (mirror, *mirror.rglob("*")):
        if folder.is_dir():
            folder.chmod(0o755)
    return mirror


class Postfix:
    """One Postfix instance of a test: config, queue and log in a temp dir of its own.

    Set before :meth:`start`: ``routes`` maps a recipient domain to a Postfix transport, e.g.
    ``{"lmtp.example.com": "lmtp:inet:127.0.0.1:2424", "pipe.example.com": "mailbot:"}``;
    ``pipe_config`` is the mailbot.toml the ``mailbot`` pipe service files with, ``python``
    the interpreter and PYTHONPATH it runs (see :func:`pipe_python`).
    """

    def __init__(self, sink: SmtpSink) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mailbot-postfix-"))
        self.root.chmod(0o755)  # the pipe user reads the wrapper and its instance's files
        self.conf = self.root / "conf"
        self.host, self.port = LOOPBACK, free_port()
        self.sink = sink
        self.routes: dict[str, str] = {}
        self.pipe_config = self.root / "mailbot.toml"
        self.python = ("false", "")  # no pipe: its deliveries fail
        self.maillog = self.root / "maillog"

    def _write(self) -> None:
        """Write main.cf, master.cf and the pipe's wrapper script; make queue and data dirs."""
        for folder in (self.conf, self.root / "queue", self.root / "data"):
            folder.mkdir(exist_ok=True)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.root / "data", postfix_user.pw_uid, postfix_user.pw_gid)
        wrapper = self.root / "mailbot-pipe"
        python, pythonpath = self.python
        wrapper.write_text(WRAPPER.format(user=PIPE_USER, root=self.root, python=python,
                                          pythonpath=pythonpath, config=self.pipe_config))
        wrapper.chmod(0o755)
        transports = ", ".join(f"{domain}={via}" for domain, via in self.routes.items())
        (self.conf / "main.cf").write_text(MAIN_CF.format(
            root=self.root, host=self.host, sink_port=self.sink.port,
            domains=", ".join(self.routes), transports=transports))
        (self.conf / "master.cf").write_text(MASTER_CF.format(
            host=self.host, port=self.port, user=PIPE_USER, wrapper=wrapper))

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``postfix -c CONF ARGS`` and fail with its output if it fails."""
        done = subprocess.run([str(POSTFIX), "-c", str(self.conf), *args], capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, f"postfix {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    def start(self) -> None:
        """Start the instance; return once its smtpd greets."""
        self._write()
        self._postfix("start")
        wait_until(self._greets, 15, interval=0.05, message=f"Postfix smtpd\n{self.log()}")

    def _greets(self) -> bool:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the instance (its master and children) and remove its temp dir."""
        subprocess.run([str(POSTFIX), "-c", str(self.conf), "stop"], capture_output=True,
                       timeout=60, check=False)
        pid_file = self.root / "queue" / "pid" / "master.pid"
        if pid_file.exists() and pid_file.read_text().strip():
            wait_until(lambda: not _alive(int(pid_file.read_text())), 15,
                       message="the Postfix master to exit")
        shutil.rmtree(self.root, ignore_errors=True)

    def flush(self) -> None:
        """Retry every deferred mail now (``postqueue -f``)."""
        subprocess.run([str(POSTQUEUE), "-c", str(self.conf), "-f"], capture_output=True,
                       timeout=30, check=True)

    def submit(self, sender: str, recipient: str, raw: bytes, smtputf8: bool = False) -> str:
        """Hand one mail to the instance's smtpd (``MAIL FROM:<sender>``; "" for ``<>``).

        Returns the queue ID smtpd answered, to follow the mail in the log.
        """
        with smtplib.SMTP(self.host, self.port, timeout=10) as client:
            client.ehlo("client.test")
            options = ["SMTPUTF8", "BODY=8BITMIME"] if smtputf8 else []
            for code, reply in (client.mail(sender, options), client.rcpt(recipient)):
                assert code == 250, f"Postfix refused: {code} {reply!r}"
            code, reply = client.data(raw)
        found = QUEUED.search(reply.decode(errors="replace"))
        assert code == 250 and found, f"Postfix refused the data: {code} {reply!r}"
        return found.group(1)

    def log(self) -> str:
        """The instance's maillog so far."""
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def statuses(self, queue_id: str) -> list[str]:
        """Every delivery status (sent, deferred, bounced) logged for ``queue_id``, in order."""
        return [status for qid, status in STATUS.findall(self.log()) if qid == queue_id]

    def wait_status(self, queue_id: str, status: str, timeout: float = 15.0) -> list[str]:
        """Wait until ``queue_id`` was logged with ``status``; return all its statuses."""
        wait_until(lambda: status in self.statuses(queue_id), timeout,
                   message=f"{queue_id} status={status}\n{self.log()[-3000:]}")
        return self.statuses(queue_id)


def _alive(pid: int) -> bool:
    """True while process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Desk:
    """One mailbot behind the rig's Postfix: its instance, its daemon and its address."""

    def __init__(self, path: str, instance: Instance) -> None:
        self.path = path
        self.instance = instance
        self.address = instance.settings["support"]["address"]
        self.daemon: DaemonProcess | None = None

    def start(self) -> None:
        """Start the desk's daemon (`mailbot run`) and wait until it is ready."""
        self.daemon = self.instance.start()

    def stop(self) -> None:
        """Stop the desk's daemon cleanly."""
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def tickets(self, subject: str) -> list[dict]:
        """The tickets opened with ``subject`` (id, number)."""
        return self.instance.query("SELECT id, number FROM tickets WHERE subject = ?", (subject,))

    def wait_ticket(self, subject: str, timeout: float = 15.0) -> dict:
        """Wait until a ticket with ``subject`` exists; return it (`tickets show --json`)."""
        found = wait_until(lambda: self.tickets(subject), timeout,
                           message=f"a ticket {subject!r} at the {self.path} desk")
        return self.instance.ticket(found[0]["number"])


class PostfixRig:
    """A Postfix in front of three mailbot desks, one per way in: "lmtp", "smtp" and "pipe".

    Each desk has its own recipient domain (support@lmtp.example.com, ...) that Postfix
    routes to it; every desk relays its own mail through the same Postfix, which relays it on
    to ``sink``.  ``pipe_skip`` says why the pipe cannot run here ("" when it can).
    """

    def __init__(self) -> None:
        self.sink = SmtpSink()
        python = pipe_python()
        self.pipe_skip = python if isinstance(python, str) else ""
        routes = {"lmtp.example.com": "lmtp", "smtp.example.com": "smtp",
                  "pipe.example.com": "mailbot:"}
        self.postfix = Postfix(self.sink)
        pipe = self._instance("pipe", enabled=False)
        self.desks = {path: Desk(path, self._instance(path)) for path in ("lmtp", "smtp")}
        self.desks["pipe"] = Desk("pipe", pipe)
        self.postfix.routes = {domain: self._transport(via, self.desks[domain.split(".")[0]])
                               for domain, via in routes.items()}
        self.postfix.pipe_config = pipe.config_path
        if not self.pipe_skip:
            self.postfix.python = python

    def _instance(self, path: str, enabled: bool = True) -> Instance:
        """A mailbot for one way in, relaying through the rig's Postfix."""
        root = self.postfix.root / path
        root.mkdir()
        instance = Instance(root)
        instance.settings["support"]["address"] = f"support@{path}.example.com"
        instance.settings["listener"].update(enabled=enabled, protocol=path if enabled else "smtp")
        instance.settings["relay"] = {"host": self.postfix.host, "port": self.postfix.port,
                                      "security": "plain", "timeout_seconds": 5,
                                      "helo_name": f"{path}.mailbot.test"}
        instance.settings["limits"] = {"max_attachments": 1}
        instance.write()
        return instance

    @staticmethod
    def _transport(via: str, desk: Desk) -> str:
        """The Postfix transport toward ``desk``: LMTP, SMTP (no MX lookup) or the pipe."""
        host, port = desk.instance.listener
        return {"lmtp": f"lmtp:inet:{host}:{port}", "smtp": f"smtp:[{host}]:{port}"}.get(via, via)

    def start(self) -> None:
        """Start the sink, Postfix and the three daemons."""
        self.sink.start()
        if not self.pipe_skip:
            self._hand_pipe_data_to(PIPE_USER)
        self.postfix.start()
        for desk in self.desks.values():
            desk.start()

    def _hand_pipe_data_to(self, user: str) -> None:
        """Let ``user`` (the pipe's) own the pipe desk's data dir, created by that user.

        The daemon runs as root and writes into it too; SQLite gives the files it adds
        (journal, WAL) the database's owner, so the pipe user can keep writing.
        """
        instance = self.desks["pipe"].instance
        data = Path(instance.settings["service"]["data_dir"])
        data.mkdir(exist_ok=True)
        owner = pwd.getpwnam(user)
        os.chown(data, owner.pw_uid, owner.pw_gid)
        python, pythonpath = self.postfix.python
        created = run_as(user, "env", f"PYTHONPATH={pythonpath}", python, "-m", "mailbot",
                         "--config", str(instance.config_path), "tickets", "list")
        assert created.returncode == 0, created.stdout + created.stderr

    def stop(self) -> None:
        """Stop the daemons, Postfix and the sink; remove the temp dir."""
        try:
            for desk in self.desks.values():
                desk.stop()
        finally:
            self.postfix.stop()
            self.sink.stop()
