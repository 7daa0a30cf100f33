"""The rehearsal's world on this machine: the old server, the new host and the zone's DNS, on loopback.

Both mail servers are the rendered host (Postfix, Dovecot with IMAP and POP3,
OpenDKIM) from :func:`mailstack.host.files.render_host_files`: the new one
from the stack, the old one under the old server's name. The zone is served
by Knot. An SMTP sink stands in for the way out the stack declares (its
relay, SES, or the internet behind a lifted port 25): the new host relays
all outgoing mail to it, so verify's outbound probe leaves as it would. Addresses are taken from a block only one rehearsal may hold at a
time (a lock file per block), so two rehearsals never collide.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from mailstack.host.records import Dkim, Record, desired_records, dkim_value
from mailstack.local import host as local
from mailstack.local.dnsserver import AuthoritativeDns
from mailstack.local.host import HELPER_PORTS, PORTS, LocalHost
from mailstack.local.loopback import LoopbackAddress
from mailstack.local.sink import SmtpSink
from mailstack.local.zonefile import reverse_record, reverse_zone
from mailstack.stack.passwords import initial_password
from mailstack.stack.roster import GeneratePassword, Roster
from mailstack.stack.settings import Settings

BLOCK_BASE = "127.0.30."
BLOCKS = 25  # 127.0.30.0/24 in blocks of ten: .1 old, .2 new, .3 DNS, .4 the way out (SMTP sink)
LOCK_DIR = Path("/run/mailstack-rehearsal")
REQUIRED_TOOLS = (("/usr/sbin/knotd", "knot"),)


class RehearsalRefused(Exception):
    """The rehearsal cannot start here; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class Addresses:
    old: str
    new: str
    dns: str
    relay: str


def missing_requirements(exists=os.path.exists, euid: int | None = None) -> list[str]:
    """What this machine lacks for a rehearsal, each with how to get it (empty: ready)."""
    problems = []
    if (os.geteuid() if euid is None else euid) != 0:
        problems.append("root: the rehearsal runs Postfix and Dovecot as their own users and adds loopback "
                        "addresses; run it with sudo")
    packages = local.missing_packages(exists) + [package for path, package in REQUIRED_TOOLS if not exists(path)]
    if packages:
        problems.append(f"Debian packages {', '.join(packages)}: run bash scripts/bootstrap as root, or "
                        f"apt-get install -y {' '.join(packages)}")
    return problems


def rehearsal_roster(roster: Roster, limit: int | None = None) -> Roster:
    """The stack's roster (its first ``limit`` mailboxes) with every password generated.

    A rehearsal never knows the users' real passwords: each server of the
    rehearsal derives its own from a seed of the run.
    """
    boxes = list(roster)[:limit] if limit else list(roster)
    return replace(roster, mailboxes=tuple(replace(box, password=GeneratePassword()) for box in boxes))


def old_server_settings(settings: Settings) -> Settings:
    """The old server as a mail host of its own: the stack's domains under the old server's name."""
    return settings.model_copy(update={"host": settings.host.model_copy(update={"name": settings.old_server.host})})


def parent_zone(name: str) -> str:
    return name.split(".", 1)[1]


@dataclass
class World:
    """What a rehearsal runs: call :meth:`start`, and :meth:`stop` however it ends (also on Ctrl-C)."""

    settings: Settings
    roster: Roster
    addresses: Addresses | None = None
    old: LocalHost | None = None
    new: LocalHost | None = None
    dns: AuthoritativeDns | None = None
    relay: SmtpSink | None = None
    relay_address: LoopbackAddress | None = None
    work: Path | None = None
    old_seed: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    new_seed: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    dkim_key: str = ""
    keep: bool = False
    _lock: object = None

    # ------------------------------------------------------------ passwords and trust

    def old_password(self, address: str) -> str:
        return initial_password(self.old_seed, address)

    def new_password(self, address: str) -> str:
        return initial_password(self.new_seed, address)

    @property
    def cafile(self) -> str:
        """Both servers' self-signed certificates in one file: what the operator's machine trusts."""
        return str(self.work / "ca.pem")

    # ------------------------------------------------------------ DNS

    @property
    def zones(self) -> list[str]:
        zones = {self.settings.zone, reverse_zone(self.addresses.old), reverse_zone(self.addresses.new)}
        if not self.settings.old_server.host.endswith("." + self.settings.zone):
            zones.add(parent_zone(self.settings.old_server.host))
        return sorted(zones)

    def records(self, settings: Settings) -> list[Record]:
        """The zone as the stack declares it in ``settings``' phase, with the old server's own name and PTRs."""
        public = local.public_key_pem(self.dkim_key)
        dkim = Dkim(settings.dns.dkim_selector, dkim_value(public))
        return desired_records(settings, ip=self.addresses.new, dkim=dkim) + self.old_server_records()

    def old_server_records(self) -> list[Record]:
        """The old server's name and reverse DNS, as they are before and during the migration."""
        return [Record(self.settings.old_server.host, "A", (self.addresses.old,), self.settings.normal_ttl,
                       "the old server"),
                reverse_record(self.addresses.old, self.settings.old_server.host),
                reverse_record(self.addresses.new, self.settings.host.name)]

    def before_migration(self, previous_ttl: int) -> list[Record]:
        """The zone before the stack touched it: MX on the old server with its usual TTL."""
        old = self.settings.old_server
        return [Record(domain, "MX", (f"{old.mx_priority} {old.host}.",), previous_ttl, "before the migration")
                for domain in self.settings.domains] + self.old_server_records()

    def serve(self, records: list[Record]) -> None:
        self.dns.serve(records)

    # ------------------------------------------------------------ lifecycle

    def start(self, previous_ttl: int) -> "World":
        """Take an address block, start DNS (serving the zone as before the migration) and both servers."""
        self.addresses, self._lock = take_block()
        self.work = Path(tempfile.mkdtemp(prefix="mailstack-rehearsal-"))
        self.dkim_key = local.new_dkim_key()
        self.dns = AuthoritativeDns(self.addresses.dns, self.zones,
                                    nameservers=[(f"ns1.{self.settings.zone}", self.addresses.dns)])
        self.dns.serve(self.before_migration(previous_ttl))
        self.relay_address = LoopbackAddress(self.addresses.relay)
        self.relay_address.add()
        self.relay = SmtpSink(self.addresses.relay, 25).start()
        self.old = local.start(old_server_settings(self.settings), self.roster, address=self.addresses.old,
                               password_seed=self.old_seed)
        self.new = local.start(self.settings, self.roster, address=self.addresses.new, password_seed=self.new_seed,
                               dkim_private_key=self.dkim_key, relayhost=f"[{self.addresses.relay}]:25")
        (self.work / "ca.pem").write_text(self.old.ca_cert.read_text() + self.new.ca_cert.read_text())
        return self

    def stop(self) -> list[str]:
        """Stop everything started and remove what was added, unless ``keep``; never raises."""
        if self.keep:
            return []
        problems = []
        for host in (self.new, self.old):
            if host is not None:
                problems += host.stop()
        if self.dns is not None:
            with contextlib.suppress(Exception):
                self.dns.stop()
        if self.relay is not None:
            with contextlib.suppress(Exception):
                self.relay.stop()
        if self.relay_address is not None:
            self.relay_address.remove()
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)
        release_block(self._lock)
        self.new = self.old = self.dns = self.relay = self.relay_address = None
        return problems


def take_block() -> tuple[Addresses, object]:
    """The first address block no other rehearsal holds and no server listens on; its lock stays held."""
    LOCK_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    for block in range(BLOCKS):
        base = block * 10
        addresses = Addresses(*(f"{BLOCK_BASE}{base + n}" for n in (1, 2, 3, 4)))
        handle = open(LOCK_DIR / f"{BLOCK_BASE}{base}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        ports = [*PORTS.values(), *HELPER_PORTS, 53]
        if any(local.busy_port(a, ports) for a in (addresses.old, addresses.new, addresses.dns, addresses.relay)):
            release_block(handle)
            continue
        return addresses, handle
    raise RehearsalRefused(f"every address block of {BLOCK_BASE}0/24 is held by another rehearsal or in use: "
                           f"stop one (mailstack rehearse cleans up when it ends) and try again")


def release_block(handle) -> None:
    if handle is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


__all__ = ["Addresses", "RehearsalRefused", "World", "missing_requirements", "old_server_settings",
           "rehearsal_roster"]
