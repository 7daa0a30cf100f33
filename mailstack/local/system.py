"""What the local servers need of this machine, set up once and idempotently: the vmail user."""

from __future__ import annotations

import pwd
import subprocess

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
