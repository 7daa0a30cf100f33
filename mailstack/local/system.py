"""What the local servers need of this machine, set up once and idempotently: the vmail user; and their processes."""

from __future__ import annotations

import pwd
import subprocess
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
