"""The rendered mail host, run for real on one loopback address: Postfix, Dovecot, OpenDKIM.

The files are exactly those of the config bundle (:func:`render_host_files`),
laid out by the host's own ``mailstack-agent`` under a temporary root. Only
the :class:`~mailstack.host.files.Placement` differs from production: the
root directory, the listen address, log files instead of syslog, and where
outgoing mail goes. The services run as the same users as on the host, so a
local run needs root (as the host does).

Used by the integration tests and by ``mailstack local up/down``.
"""

from __future__ import annotations

import errno
import importlib.machinery
import importlib.util
import os
import shutil
import shlex
import socket
import subprocess
import tempfile
import time
import contextlib
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from mailstack.host import files as hostfiles
from mailstack.host.files import AUTH_POLICY_PORT, DKIM_PORT, FROM_MILTER_PORT, GUARDS, QUOTA_STATUS_PORT, Placement
from mailstack.local import loopback
from mailstack.local.loopback import LoopbackAddress
from mailstack.local.system import MachineNotReady, alive, children, ensure_vmail_user, terminate
from mailstack.stack.roster import GeneratePassword, Mailbox, Roster
from mailstack.stack.settings import Settings

PORTS = {"smtp": 25, "submission": 587, "submissions": 465, "imaps": 993, "pop3s": 995}

# The program each Debian package brings that a local run needs.
REQUIRED_PROGRAMS = (
    ("/usr/sbin/postfix", "postfix"),
    ("/usr/sbin/dovecot", "dovecot-core"),
    ("/usr/lib/dovecot/imap", "dovecot-imapd"),
    ("/usr/lib/dovecot/pop3", "dovecot-pop3d"),
    ("/usr/lib/dovecot/lmtp", "dovecot-lmtpd"),
    ("/usr/sbin/opendkim", "opendkim"),
    ("/usr/lib/python3/dist-packages/Milter/__init__.py", "python3-milter"),
    ("/usr/bin/openssl", "openssl"),
    ("/usr/sbin/ip", "iproute2"),
)
# Every port a local run listens on besides the mail ports: OpenDKIM, the From check milter, the auth policy, quota-status.
HELPER_PORTS = (DKIM_PORT, FROM_MILTER_PORT, AUTH_POLICY_PORT, QUOTA_STATUS_PORT)
START_TIMEOUT = 20.0
# Local roots live here, not in /tmp: OpenDKIM refuses a key below a directory others can write to.
LOCAL_BASE = Path("/run/mailstack-local")


class LocalHostError(Exception):
    """A local run cannot start or stop; the message says what to do."""


# ---------------------------------------------------------------- decisions


def missing_packages(exists: Callable[[str], bool] = os.path.exists) -> list[str]:
    """Debian packages a local run needs that are not installed."""
    return [package for program, package in REQUIRED_PROGRAMS if not exists(program)]


def with_test_mailbox(roster: Roster, domain: str) -> tuple[Roster, Mailbox]:
    """The roster and a mailbox with a generated password for a local run to hand out.

    The roster's first ``generate`` mailbox; when it has none, a
    ``mailstack-test@<domain>`` mailbox is added.
    """
    for box in roster:
        if isinstance(box.password, GeneratePassword):
            return roster, box
    box = Mailbox(f"mailstack-test@{domain}", "mailstack test", None, "imap", (), GeneratePassword(), "local run")
    return replace(roster, mailboxes=(*roster.mailboxes, box)), box


# ---------------------------------------------------------------- the running host


@dataclass(frozen=True)
class LocalHost:
    """A local host: where its files are and which address it serves."""

    root: Path
    address: str
    added_address: bool
    host: str

    @property
    def ca_cert(self) -> Path:
        """The self-signed certificate every service presents: the CA a client trusts."""
        return self.root / f"etc/letsencrypt/live/{self.host}/fullchain.pem"

    @property
    def log_dir(self) -> Path:
        return self.root / "var/log"

    @property
    def postfix_dir(self) -> Path:
        return self.root / "etc/postfix"

    @property
    def dovecot_conf(self) -> Path:
        return self.root / "etc/dovecot/dovecot.conf"

    def logs(self, lines: int = 30) -> str:
        """The end of every log file, for failure messages."""
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self, *, remove: bool = True) -> list[str]:
        """Stop every daemon, then remove the root directory and the address if this run added them.

        Returns the problems met (empty when all went well); never raises, so
        it can always run in a ``finally``.
        """
        problems = []
        # SIGTERM to each master is what `postfix stop` and `doveadm stop` send; it also works
        # when a start failed half-way and a config does not parse.
        pids = [self._pid(relative) for relative in
                ("var/spool/postfix/pid/master.pid", "run/dovecot/master.pid", "run/opendkim/opendkim.pid",
                 *(f"run/mailstack/{unit}.pid" for unit in GUARDS))]
        dovecot = pids[1]
        # Dovecot's master waits about a second for its children to go: they are told too.
        terminate([pid for pid in pids if pid] + (children(dovecot) if dovecot else []),
                   wake=((self.address, DKIM_PORT), (self.address, FROM_MILTER_PORT)))
        # Children may hold a listening socket a moment longer than their master.
        deadline = time.monotonic() + 10
        while busy_port(self.address, [*PORTS.values(), *HELPER_PORTS]) and time.monotonic() < deadline:
            time.sleep(0.1)
        busy = busy_port(self.address, [*PORTS.values(), *HELPER_PORTS])
        if busy:
            problems.append(f"port {busy} on {self.address} is still in use after stopping")
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.root.parent.rmdir()  # only when no other local host is left
        if self.added_address:
            address = LoopbackAddress(self.address)
            address.added = True
            address.remove()
            if loopback.is_present(self.address):
                problems.append(f"could not remove {self.address}: run ip addr del {self.address}/32 dev lo")
        return problems

    def reload_postfix(self, timeout: float = 10.0) -> None:
        """``postfix reload``, returning once the new configuration is in force: the master has logged its reload,
        and no smtpd that read the old one is left to take a connection (``postfix reload`` only signals)."""
        master = self._pid("var/spool/postfix/pid/master.pid")
        old = {pid for pid in children(master) if _command(pid) == "smtpd"} if master else set()
        log = self.log_dir / "postfix.log"
        reloads = _reloads(log)
        _run(["postfix", "-c", str(self.postfix_dir), "reload"], "reloading Postfix")
        deadline = time.monotonic() + timeout
        while (old or _reloads(log) <= reloads) and time.monotonic() < deadline:
            time.sleep(0.05)
            old = {pid for pid in old if alive(pid)}
        if old or _reloads(log) <= reloads:
            raise LocalHostError(f"Postfix on {self.address} did not reload within {timeout:.0f} s"
                                 + (f" (smtpd {sorted(old)} still running)" if old else ""))

    def _pid(self, relative: str) -> int | None:
        try:
            return int((self.root / relative).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def _command(pid: int) -> str:
    """A process's command name, or "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _reloads(log: Path) -> int:
    """How many reloads the Postfix master has logged."""
    try:
        return log.read_text(errors="replace").count("reload -- version")
    except OSError:
        return 0


# ---------------------------------------------------------------- starting


def preflight() -> None:
    """Refuse early, in one line each, what would make a local run fail later."""
    if os.geteuid() != 0:
        raise LocalHostError("a local host must be started as root (it runs Postfix and Dovecot as their own users "
                             "and adds a loopback address): run it with sudo")
    missing = missing_packages()
    if missing:
        raise LocalHostError(f"missing Debian package{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
                             f"run apt-get install -y {' '.join(missing)}")


def prepare_system() -> None:
    """Once per machine, idempotently: the vmail user and the main.cf Postfix insists on."""
    try:
        ensure_vmail_user()
    except MachineNotReady as exc:
        raise LocalHostError(str(exc)) from None
    # Postfix commands read the default main.cf even when given another directory.
    main_cf = Path("/etc/postfix/main.cf")
    if not main_cf.exists():
        main_cf.touch()


def busy_port(address: str, ports) -> int | None:
    """The first of ``ports`` something listens on at ``address``."""
    for port in ports:
        with socket.socket() as probe:
            # SO_REUSEADDR: closed connections in TIME_WAIT do not count, a listener does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return port
    return None


def _wait_for_ports(address: str, ports, timeout: float) -> list[int]:
    """Ports still closed after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    waiting = list(ports)
    while waiting and time.monotonic() < deadline:
        for port in list(waiting):
            try:
                socket.create_connection((address, port), timeout=0.5).close()
                waiting.remove(port)
            except OSError:
                pass
        if waiting:
            time.sleep(0.1)
    return waiting


def _pull_script():
    """The host's own bundle writer (templates/host/mailstack-agent), loaded as a module."""
    path = hostfiles.TEMPLATES / "host" / "mailstack-agent"
    loader = importlib.machinery.SourceFileLoader("mailstack_pull", str(path))
    spec = importlib.util.spec_from_loader("mailstack_pull", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _run(command: list[str], what: str) -> None:
    # Output to a file, not a pipe: a daemon inherits it, and reading a pipe would wait for the daemon to exit.
    with tempfile.TemporaryFile("w+") as output:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
        if result.returncode != 0:
            output.seek(0)
            raise LocalHostError(f"{what} failed ({' '.join(command)}): {output.read().strip()}")


def _lay_out(root: Path, host: str, address: str, files: dict[str, hostfiles.HostFile]) -> None:
    """Write the bundle under ``root`` as the host would, plus what the Debian packages and certbot provide there."""
    _pull_script().apply(hostfiles.bundle_document(files), str(root))
    for directory, owner in (("var/spool/postfix", "root"), ("var/lib/postfix", "postfix"), ("var/log", "root"),
                             ("var/lib/dovecot", "root"), ("run/opendkim", "opendkim"),
                             (hostfiles.MAIL_ROOT.lstrip("/"), "vmail")):
        path = root / directory
        path.mkdir(parents=True, exist_ok=True)
        shutil.chown(path, owner, owner)
    (root / hostfiles.MAIL_ROOT.lstrip("/")).chmod(0o750)
    # What certbot would obtain on the host: a self-signed certificate for the host name (and the address).
    live = root / f"etc/letsencrypt/live/{host}"
    live.mkdir(parents=True, exist_ok=True)
    _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", f"/CN={host}",
          "-addext", f"subjectAltName=DNS:{host},IP:{address}",
          "-keyout", str(live / "privkey.pem"), "-out", str(live / "fullchain.pem")], "making the test certificate")
    (live / "privkey.pem").chmod(0o600)


def exec_start(unit_text: str) -> list[str]:
    """The command of a systemd unit's ``ExecStart=`` line, split as systemd would (no specifiers are used)."""
    for line in unit_text.splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise LocalHostError("the unit has no ExecStart= line")


def _start_guards(local: LocalHost) -> None:
    """Start the host's own daemons (the From check milter, the auth policy) with their units' own command lines.

    On the host systemd runs them as a dynamic user; here they run as nobody, logging to the log directory.
    """
    (local.root / "run/mailstack").mkdir(parents=True, exist_ok=True)
    for unit in GUARDS:
        command = exec_start((local.root / f"etc/systemd/system/{unit}.service").read_text())
        with open(local.log_dir / f"{unit}.log", "ab") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, user="nobody",
                                       group="nogroup", start_new_session=True)
        (local.root / f"run/mailstack/{unit}.pid").write_text(f"{process.pid}\n")


def new_dkim_key() -> str:
    """A fresh 2048-bit RSA DKIM signing key (PEM), as the Pulumi program's key would be."""
    result = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                            capture_output=True, text=True, check=True)
    return result.stdout


def public_key_pem(private_key_pem: str) -> str:
    """The public half (PEM) of a private key, as DNS publishes it for DKIM."""
    result = subprocess.run(["openssl", "pkey", "-pubout"], input=private_key_pem, capture_output=True, text=True,
                            check=True)
    return result.stdout


def start(settings: Settings, roster: Roster, *, address: str, password_seed: str,
          dkim_private_key: str | None = None, relayhost: str | None = None) -> LocalHost:
    """Start the rendered host on ``address`` (standard ports) under a new temporary root.

    ``relayhost`` (e.g. ``[127.0.3.2]:25``) receives all outgoing mail.
    Raises :class:`LocalHostError` with the daemons' log when something does
    not come up; everything started so far is stopped and removed first.
    """
    preflight()
    try:
        loopback_address = LoopbackAddress(address)
    except ValueError as exc:
        raise LocalHostError(str(exc)) from None
    prepare_system()
    loopback_address.add()
    LOCAL_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"{address}-", dir=LOCAL_BASE))
    # Daemons running as postfix, dovecot, vmail and opendkim must traverse it.
    root.chmod(0o755)
    local = LocalHost(root, address, loopback_address.added, settings.host.name)
    try:
        busy = busy_port(address, [*PORTS.values(), *HELPER_PORTS])
        if busy:
            raise LocalHostError(f"port {busy} on {address} is already in use (another mail server?): "
                                 f"see ss -ltnp 'sport = :{busy}'")
        placement = Placement(root=str(root), address=address, log_dir=str(local.log_dir), relayhost=relayhost)
        files = hostfiles.render_host_files(settings, roster, password_seed=password_seed, mail_volume_id="local",
                                            dkim_private_key=dkim_private_key or new_dkim_key(), placement=placement)
        _lay_out(root, settings.host.name, address, files)
        _run(["postfix", "-c", str(local.postfix_dir), "set-permissions"], "postfix set-permissions")
        _run(["opendkim", "-x", str(root / "etc/opendkim.conf")], "starting OpenDKIM")
        _start_guards(local)
        _run(["dovecot", "-c", str(local.dovecot_conf)], "starting Dovecot")
        _run(["postfix", "-c", str(local.postfix_dir), "start"], "starting Postfix")
        closed = _wait_for_ports(address, [*PORTS.values(), *HELPER_PORTS], START_TIMEOUT)
        if closed:
            raise LocalHostError(f"ports {', '.join(map(str, closed))} on {address} did not open")
    except BaseException as exc:
        logs = local.logs() if root.exists() else ""
        local.stop()
        if isinstance(exc, LocalHostError):
            raise LocalHostError(f"{exc}\n{logs}".strip()) from None
        raise
    return local


@contextmanager
def running(settings: Settings, roster: Roster, **kwargs) -> Iterator[LocalHost]:
    """:func:`start` the host, and stop it and remove what it added however the block ends."""
    local = start(settings, roster, **kwargs)
    try:
        yield local
    finally:
        local.stop()
