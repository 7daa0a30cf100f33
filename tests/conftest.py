"""Shared fixtures: the project, a valid stack config, rosters of any size."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
SHA512_HASH = (
    "{SHA512-CRYPT}$6$svwxAy9FuuEhIbGC$Wfyj/Wl8XLcuJ.qAtUGa2dVbtNM.fLrt3RctbAhjPu5jugV65Py4snWCn4XFyWtS8id1ARUs6.yPtAsSHgB3e1"
)


def require_tool(name: str) -> str:
    """Path of a system tool; in CI a missing tool is a failure, not a skip."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed: .ci/run must install it")
    pytest.skip(f"{name} is not installed (scripts/bootstrap installs it)")


def require_root_and_packages() -> None:
    """The real mail host needs root and Debian's packages; in CI their absence is a failure."""
    from mailstack.local import host as local

    problem = "must run as root" if os.geteuid() != 0 else None
    missing = local.missing_packages()
    if missing:
        problem = f"missing Debian packages {' '.join(missing)} (scripts/bootstrap installs them)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"the mail host tests {problem}")
        pytest.skip(f"the mail host tests {problem}")


def require_imap_servers() -> None:
    """The test IMAP servers (mailstack.local.imapserver) need Dovecot and root (loopback addresses, vmail)."""
    require_tool("dovecot")
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the IMAP server tests must run as root")
        pytest.skip("the IMAP servers need root (loopback addresses, vmail user)")


def write_roster(path: Path, count: int, *, domain: str = "example.com", generate_every: int = 2) -> Path:
    """A CSV roster of ``count`` mailboxes, every ``generate_every``-th with a generated password."""
    lines = ["address,name,quota,protocol,aliases,password"]
    for n in range(count):
        password = "generate" if n % generate_every == 0 else SHA512_HASH
        aliases = f"alias{n}@{domain}" if n % 10 == 0 else ""
        lines.append(f"user{n}@{domain},User {n},{1 + n % 4}G,{'pop' if n % 7 == 0 else 'imap'},{aliases},{password}")
    path.write_text("\n".join(lines) + "\n")
    return path


def stack_values(roster: Path | str, **overrides) -> dict:
    """Raw ``mailstack:*`` values of a valid stack (keys without the namespace)."""
    values = {
        "phase": "provision",
        "domains": ["example.com"],
        "zone": "example.com",
        "host": {"name": "mail.example.com", "instance_type": "t3.small", "mail_volume_gb": 20},
        "old_server": {"host": "mail.example.net", "ip": "192.0.2.25", "imap": "imaps://mail.example.net:993"},
        "roster": str(roster),
    }
    values.update(overrides)
    return values


RELAY = {"host": "smtp.relay.example.net", "port": 587}
"""A declared way out for mail (``mailstack:relay``), for stacks that go through the cutover gate."""
RELAYED = {"route": "relay", "summary": "relay smtp.relay.example.net:587", "probe": "probe@partner.example",
           "action": "relayed", "remote_mta": "smtp.relay.example.net"}
"""The outbound proof verify records for a stack declaring :data:`RELAY`: its probe taken by the relay."""


def pulumi_config(values: dict) -> dict[str, str]:
    """Values as the Pulumi engine hands them to the program (objects as JSON text)."""
    return {f"mailstack:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


@pytest.fixture
def roster_file(tmp_path: Path) -> Path:
    return write_roster(tmp_path / "roster.csv", 5)


@contextlib.contextmanager
def moto_server(address: str):
    """moto in server mode on a loopback address (any port): yields its endpoint URL, and is always stopped."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=address, port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def route53_value(rtype: str, value: str) -> str:
    """A declared value as Route53 serves it (what the provider sends): a TXT's ``""``-separated strings quoted."""
    if rtype == "TXT":
        return " ".join(f'"{part}"' for part in value.split('""'))
    return value


class NullWriter:
    """An IMAP connection's writer that writes nowhere: tests feed the server's side to its reader."""

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        pass
