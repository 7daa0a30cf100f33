"""What the local servers need of this machine, set up once and idempotently: the vmail user; and their processes."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from pathlib import Path

from mailstack.host.files import VMAIL_UID


class MachineNotReady(RuntimeError):
    """This machine cannot host the local servers as it is; the message says what to change."""


def ensure_vmail_user() -> pwd.struct_passwd:
    """The ``vmail`` user that owns every Maildir, created with the host's pinned uid when missing."""
    try:
        user = pwd.getpwnam("vmail")
    except KeyError:
        subprocess.run(["useradd", "--system", "--uid", str(VMAIL_UID), "--user-group", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", "vmail"], check=True, capture_output=True)
        user = pwd.getpwnam("vmail")
    if user.pw_uid != VMAIL_UID:
        raise MachineNotReady(f"user vmail has uid {user.pw_uid}, but the host configuration pins {VMAIL_UID}: "
                           f"change it with usermod -u {VMAIL_UID} vmail")
    return user


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue  # exited meanwhile
        if parent == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs; an exited process not yet reaped (a zombie: our child, or an orphan of an init
    that does not reap) has closed its sockets and counts as gone."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def terminate(pids: list[int], timeout: float = 15.0, wake: tuple[tuple[str, int], ...] = ()) -> None:
    """SIGTERM to all at once, then wait; SIGKILL after ``timeout``.

    A milter (OpenDKIM, the From check) sees the signal only when its listener wakes, up to 5 s later unless a
    connection comes: while waiting, a connection is made to each ``wake`` address.
    """
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if alive(pid)]
        for address in wake if pids else ():
            with contextlib.suppress(OSError):
                socket.create_connection(address, timeout=1).close()
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
