"""A plain Dovecot IMAP server on a loopback address, for the sync tests and the sync bench.

IMAP: plaintext on 143 and TLS on 993 (a self-signed certificate for the
address), passwd-file users, Maildir; with ``pop3`` also POP3 on 110 and 995
(Dovecot's default UIDLs), as an old server that POP users read. Unlike :mod:`mailstack.local.host` it
is not the production host: it stands for "some IMAP server" on either side
of a migration, with the folder separator and namespace prefix chosen by the
caller (``.`` and ``INBOX.`` imitate a Courier-style old server).
"""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mailstack.imap import utf7
from mailstack.local.loopback import LoopbackAddress
from mailstack.local.system import MachineNotReady, alive, children, ensure_vmail_user, terminate

VMAIL_USER = "vmail"
START_TIMEOUT = 15.0
FLAG_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}


class ImapServerError(Exception):
    """The server could not start; the message says why and where the log is."""


@dataclass(frozen=True)
class User:
    """A mailbox of the test server; ``quota`` such as ``100K`` limits its storage."""

    name: str
    password: str
    quota: str | None = None


@dataclass
class DovecotImap:
    """One Dovecot instance serving IMAP on ``address`` (ports 143 and 993)."""

    address: str
    users: list[User]
    separator: str = "/"
    prefix: str = ""
    layout: str = "maildir++"  # or "fs": folders as nested directories, so a name may hold "." (LAYOUT=fs)
    root: Path | None = None
    imap_port: int = 143
    imaps_port: int = 993
    host_name: str | None = None  # also in the certificate, for clients that check a name
    pop3: bool = False
    pop3_uidl_format: str = "%08Xu%08Xv"  # Dovecot's default; "%f" gives file-name UIDLs as qmail and Courier do
    pop3_port: int = 110
    pop3s_port: int = 995
    _loopback: LoopbackAddress | None = field(default=None, repr=False)
    _own_root: bool = field(default=False, repr=False)

    # ------------------------------------------------------------ paths

    @property
    def conf(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def cert(self) -> Path:
        return self.root / "cert.pem"

    @property
    def log(self) -> Path:
        return self.root / "dovecot.log"

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / user

    def url(self, tls: bool = False) -> str:
        return f"imaps://{self.address}:{self.imaps_port}" if tls else f"imap://{self.address}:{self.imap_port}"

    def pop3_url(self, tls: bool = False) -> str:
        return f"pop3s://{self.address}:{self.pop3s_port}" if tls else f"pop3://{self.address}:{self.pop3_port}"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "DovecotImap":
        """Add the address, write the config, start Dovecot and wait for both ports."""
        if shutil.which("dovecot") is None:
            raise ImapServerError("dovecot is not installed (apt-get install dovecot-core dovecot-imapd)")
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix=f"mailstack-imap-{self.address}-"))
            self._own_root = True
        self.root.chmod(0o755)
        self._loopback = LoopbackAddress(self.address)
        self._loopback.add()
        try:
            self._write_files()
            # The daemon keeps inherited pipes open: let it write to files, not to ours.
            with open(self.root / "start.log", "w") as log:
                subprocess.run(["dovecot", "-c", str(self.conf)], check=True, stdin=subprocess.DEVNULL,
                               stdout=log, stderr=log)
            self._wait_for_ports()
        except (subprocess.CalledProcessError, ImapServerError, MachineNotReady) as exc:
            detail = str(exc)
            if isinstance(exc, subprocess.CalledProcessError):
                detail = (self.root / "start.log").read_text()
            self.stop()
            raise ImapServerError(f"dovecot on {self.address} did not start: {detail.strip()}") from None
        except BaseException:
            self.stop()  # whatever went wrong, nothing is left running and the address is removed
            raise
        return self

    def stop(self) -> None:
        """Stop Dovecot, remove the address if added here and the root if created here; safe twice."""
        if self.root is not None and self.conf.exists():
            pid = self._master_pid()
            if pid and alive(pid):
                # What `doveadm stop` sends, without its extra 2 s of waiting; to the children too, or the master
                # waits about a second for them to go. A login process started just before (by the start's port
                # check, say) waits 5 s for the stats service, already gone: after a second, what is left is killed.
                terminate([pid, *children(pid)], timeout=1.0)
            else:
                subprocess.run(["doveadm", "-c", str(self.conf), "stop"], capture_output=True)
        if self._loopback is not None:
            self._loopback.remove()
        if self._own_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> "DovecotImap":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _master_pid(self) -> int | None:
        try:
            return int((self.root / "run" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _wait_for_ports(self) -> None:
        """Until every port answers and the master has written its pid (which :meth:`stop` signals: a stop
        straight after the start would otherwise fall back to the slower ``doveadm stop``)."""
        deadline = time.monotonic() + START_TIMEOUT
        for port in (self.imap_port, self.imaps_port, *((self.pop3_port, self.pop3s_port) if self.pop3 else ())):
            while True:
                try:
                    socket.create_connection((self.address, port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise ImapServerError(f"port {port} not open after {START_TIMEOUT:.0f} s; see {self.log}")
                    time.sleep(0.05)
        while self._master_pid() is None:
            if time.monotonic() > deadline:
                raise ImapServerError(f"no master.pid after {START_TIMEOUT:.0f} s; see {self.log}")
            time.sleep(0.01)

    def _write_files(self) -> None:
        vmail = ensure_vmail_user()
        (self.root / "run").mkdir(exist_ok=True)
        (self.root / "mail").mkdir(exist_ok=True)
        os.chown(self.root / "mail", vmail.pw_uid, vmail.pw_gid)
        if not self.cert.exists():
            names = f"IP:{self.address}" + (f",DNS:{self.host_name}" if self.host_name else "")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.root / "key.pem"),
                            "-out", str(self.cert), "-days", "30", "-subj", f"/CN={self.address}",
                            "-addext", f"subjectAltName={names}"], check=True, capture_output=True)
        self._write_users()
        self.conf.write_text(_CONFIG.format(
            name=f"mailstack-imap-{self.address}", root=self.root, address=self.address, uid=vmail.pw_uid,
            separator=self.separator, prefix=self.prefix, imap=self.imap_port, imaps=self.imaps_port,
            layout=":LAYOUT=fs" if self.layout == "fs" else "",
            protocols="imap pop3" if self.pop3 else "imap")
            + (_POP3_CONFIG.format(address=self.address, pop3=self.pop3_port, pop3s=self.pop3s_port,
                                   uidl_format=self.pop3_uidl_format) if self.pop3 else ""))

    def _write_users(self) -> None:
        lines = []
        for user in self.users:
            extra = f"userdb_quota_rule=*:storage={user.quota}" if user.quota else ""
            lines.append(f"{user.name}:{{PLAIN}}{user.password}::::::{extra}")
        path = self.root / "users"
        path.write_text("\n".join(lines) + "\n")
        # Readable by Dovecot's auth process only.
        os.chown(path, 0, pwd.getpwnam("dovecot").pw_gid)
        path.chmod(0o640)

    # ------------------------------------------------------------ mail written directly (fast corpora)

    def create_folder(self, user: str, name: str, *, subscribe: bool = True) -> None:
        """Create a folder (Unicode name, ``/`` as hierarchy) through doveadm."""
        args = ["doveadm", "-c", str(self.conf), "mailbox", "create", "-u", user]
        subprocess.run(args + (["-s"] if subscribe else []) + [self.wire_name(name)], check=True, capture_output=True)

    def wire_name(self, name: str) -> str:
        """``Sent/2024`` as this server names it (prefix, separator); INBOX stays INBOX."""
        if name.upper() == "INBOX":
            return "INBOX"
        return self.prefix + name.replace("/", self.separator)

    def write_message(self, user: str, folder: str, body: bytes, *, flags=(), internaldate: float | None = None,
                      unique: str) -> None:
        """Drop one message file into a folder's Maildir (run :meth:`resync` afterwards)."""
        path = self.maildir(user)
        if self.layout != "maildir++":
            raise ImapServerError("write_message writes Maildir++ folders only: fill a LAYOUT=fs server over IMAP")
        if folder.upper() != "INBOX":
            path = path / ("." + ".".join(utf7.encode(part) for part in folder.split("/")))
        letters = "".join(sorted(FLAG_LETTERS[f] for f in flags))
        target = path / "cur" / f"{unique}:2,{letters}"
        target.write_bytes(body)
        if internaldate is not None:
            os.utime(target, (internaldate, internaldate))

    def resync(self, user: str) -> None:
        """Make Dovecot pick up files written by hand, owned by the mail user."""
        vmail = pwd.getpwnam(VMAIL_USER)
        for directory, _, files in os.walk(self.maildir(user)):
            os.chown(directory, vmail.pw_uid, vmail.pw_gid)
            for name in files:
                os.chown(os.path.join(directory, name), vmail.pw_uid, vmail.pw_gid)
        subprocess.run(["doveadm", "-c", str(self.conf), "force-resync", "-u", user, "*"], check=True, capture_output=True)

    def doveadm(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["doveadm", "-c", str(self.conf), *args], check=True, capture_output=True, text=True)

    # ------------------------------------------------------------ what a client sees

    def client(self, user: str, tls: bool = False) -> imaplib.IMAP4:
        """A logged-in stdlib imaplib client (independent of mailstack's own client)."""
        password = next(u.password for u in self.users if u.name == user)
        if tls:
            client = imaplib.IMAP4_SSL(self.address, self.imaps_port,
                                       ssl_context=ssl.create_default_context(cafile=str(self.cert)))
        else:
            client = imaplib.IMAP4(self.address, self.imap_port)
        client.login(user, password)
        return client

    def snapshot(self, user: str) -> "Snapshot":
        """Every folder, subscription and message (bytes digest, flags, internal date) as a client sees them."""
        client = self.client(user)
        try:
            return _snapshot(client, self.prefix, self.separator)
        finally:
            client.logout()


@dataclass(frozen=True)
class Snapshot:
    """A mailbox as seen over IMAP; folder names are Unicode with ``/`` and no namespace prefix."""

    folders: dict[str, Counter]
    subscribed: frozenset[str]
    # Folders listed as selectable whose SELECT the server refused: {folder: its words}. Each is also in
    # ``folders`` with one entry saying so, so that two snapshots compared by their folders differ.
    refused: dict[str, str] = field(default_factory=dict)

    def message_count(self) -> int:
        return sum(sum(c.values()) for c in self.folders.values())


_LIST = re.compile(rb'^\((?P<attrs>[^)]*)\) (?:"(?P<sep>[^"]*)"|NIL) (?P<name>.*)$')
_FETCH_HEAD = re.compile(rb"FLAGS \((?P<flags>[^)]*)\) INTERNALDATE \"(?P<date>[^\"]+)\"")


def _folder_names(client: imaplib.IMAP4, verb: str) -> list[tuple[str, bool]]:
    _, data = getattr(client, verb)('""', "*")
    names = []
    for item in data:
        if item is None:
            continue
        if isinstance(item, tuple):  # name sent as a literal
            head, literal = item
            match = _LIST.match(head.rsplit(b" ", 1)[0] + b" x")
            attrs, name = match.group("attrs"), literal
        else:
            match = _LIST.match(item)
            attrs, name = match.group("attrs"), match.group("name")
        name = name.decode()
        if name.startswith('"'):
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        names.append((name, b"\\Noselect" not in attrs and b"\\NonExistent" not in attrs))
    return names


def _normal(name: str, prefix: str, separator: str) -> str:
    if name.upper() == "INBOX":
        return "INBOX"
    if prefix and name.startswith(prefix):
        name = name[len(prefix):]
    return "/".join(utf7.decode(part) for part in name.split(separator))


def _snapshot(client: imaplib.IMAP4, prefix: str, separator: str) -> Snapshot:
    import hashlib

    from mailstack.imap.wire import internaldate_epoch

    folders: dict[str, Counter] = {}
    refused: dict[str, str] = {}
    for name, selectable in _folder_names(client, "list"):
        if not selectable:
            continue
        folder = _normal(name, prefix, separator)
        typ, data = client.select('"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"', readonly=True)
        messages: Counter = Counter()
        if typ != "OK":  # listed as selectable, yet refused: a difference of its own, never an empty folder
            refused[folder] = b" ".join(d for d in data if d).decode(errors="replace")
            folders[folder] = Counter({(f"SELECT refused: {refused[folder]}", frozenset(), 0): 1})
            continue
        typ, data = client.uid("FETCH", "1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
        for item in data:
            if isinstance(item, tuple):
                head, body = item
                match = _FETCH_HEAD.search(head)
                flags = frozenset(f for f in match.group("flags").decode().split() if f != "\\Recent")
                messages[(hashlib.sha256(body).hexdigest(), flags, internaldate_epoch(match.group("date").decode()))] += 1
        folders[folder] = messages
    # An LSUB entry marked \Noselect is a parent of a subscribed folder, not a subscription (RFC 3501, 6.3.9).
    subscribed = frozenset(_normal(name, prefix, separator) for name, selectable in _folder_names(client, "lsub")
                           if selectable)
    return Snapshot(folders, subscribed, refused)


_CONFIG = """\
# A plain IMAP server for sync tests and the sync bench (mailstack.local.imapserver).
instance_name = {name}
base_dir = {root}/run
state_dir = {root}/state
listen = {address}
protocols = {protocols}
log_path = {root}/dovecot.log
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
ssl_dh = </usr/share/dovecot/dh.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
mail_uid = vmail
mail_gid = vmail
first_valid_uid = {uid}
last_valid_uid = {uid}
mail_location = maildir:{root}/mail/%u{layout}
mail_plugins = $mail_plugins quota
mail_max_userip_connections = 100

passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = passwd-file
  args = {root}/users
  default_fields = uid=vmail gid=vmail home={root}/mail/%u
}}

namespace inbox {{
  inbox = yes
  separator = {separator}
  prefix = {prefix}
}}

plugin {{
  quota = maildir:User quota
}}

service imap-login {{
  inet_listener imap {{
    address = {address}
    port = {imap}
  }}
  inet_listener imaps {{
    address = {address}
    port = {imaps}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""

_POP3_CONFIG = """
pop3_uidl_format = {uidl_format}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = {address}
    port = {pop3}
  }}
  inet_listener pop3s {{
    address = {address}
    port = {pop3s}
    ssl = yes
  }}
}}
"""
