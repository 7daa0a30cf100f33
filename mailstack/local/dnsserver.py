"""A real authoritative DNS server (Knot) on a loopback address, serving given records.

Used by the tests of the DNS checks and of `mailstack status`: zones can be
changed while it runs (``serve`` again), as a Route53 change would.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import dns.message
import dns.query
import dns.rdatatype

from mailstack.local.loopback import LoopbackAddress
from mailstack.host.records import Record
from mailstack.local.zonefile import zone_text

_CONFIG = """\
server:
    rundir: "{root}/run"
    listen: {address}@{port}
    user: root:root
database:
    storage: "{root}/db"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "{root}/zones"
    file: "%s.zone"
    semantic-checks: off
zone:
{zones}
"""


class KnotNotInstalled(RuntimeError):
    pass


def _zone_of(name: str, zones: Iterable[str]) -> str | None:
    matches = [z for z in zones if name == z or name.endswith("." + z)]
    return max(matches, key=len) if matches else None


class AuthoritativeDns:
    """Knot serving ``zones`` on ``address:port``; a context manager that stops it and frees the address.

    ``nameservers`` (name, address) are the zones' NS records; default: this
    server as ``ns1.<first zone>``. Several instances naming each other stand
    for a zone's several authoritative servers.
    """

    def __init__(self, address: str, zones: Iterable[str], *, port: int = 53,
                 nameservers: list[tuple[str, str]] | None = None):
        if not shutil.which("knotd"):
            raise KnotNotInstalled("knotd is missing: apt-get install -y knot")
        self.address, self.port = address, port
        self.zones = sorted(set(zones))
        self.nameservers = nameservers or [(f"ns1.{self.zones[0]}", address)]
        self.serial = int(time.time())
        self._root = Path(tempfile.mkdtemp(prefix="mailstack-dns-"))
        for sub in ("zones", "run", "db"):
            (self._root / sub).mkdir()
        self._loopback = LoopbackAddress(address)
        self._process: subprocess.Popen | None = None

    @property
    def server(self) -> str:
        """``IP:PORT`` as the checks take it."""
        return f"{self.address}:{self.port}"

    def serve(self, records: Iterable[Record]) -> None:
        """Serve exactly these records (replacing what was served); returns once the server answers with them."""
        by_zone: dict[str, list[Record]] = defaultdict(list)
        for record in records:
            zone = _zone_of(record.name, self.zones)
            if zone is None:
                raise ValueError(f"{record.name} is in none of the served zones {self.zones}")
            by_zone[zone].append(record)
        self.serial += 1
        for zone in self.zones:
            text = zone_text(zone, by_zone[zone], nameservers=self.nameservers, serial=self.serial)
            (self._root / "zones" / f"{zone}.zone").write_text(text)
        if self._process is None:
            self._start()
        else:
            subprocess.run(["knotc", "-c", str(self._root / "knot.conf"), "zone-reload"], check=True,
                           capture_output=True, timeout=10)
        self._wait_for_serial()

    def _start(self) -> None:
        self._loopback.add()
        config = _CONFIG.format(root=self._root, address=self.address, port=self.port,
                                zones="\n".join(f"  - domain: {z}" for z in self.zones))
        (self._root / "knot.conf").write_text(config)
        log = open(self._root / "knotd.log", "wb")
        self._process = subprocess.Popen(["knotd", "-c", str(self._root / "knot.conf")], stdout=log, stderr=log)

    def _wait_for_serial(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"knotd exited: {(self._root / 'knotd.log').read_text()[-2000:]}")
            try:
                served = [self._soa_serial(zone) for zone in self.zones]
                if all(serial == self.serial for serial in served):
                    return
            except (OSError, dns.exception.DNSException):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"knotd did not serve serial {self.serial} within {timeout} s")

    def _soa_serial(self, zone: str) -> int:
        query = dns.message.make_query(zone, dns.rdatatype.SOA)
        answer = dns.query.udp(query, self.address, port=self.port, timeout=0.5)
        return answer.answer[0][0].serial

    def stop(self) -> None:
        """Stop the server and remove the loopback address; safe to call twice."""
        try:
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
        finally:
            self._process = None
            self._loopback.remove()
            shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> "AuthoritativeDns":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
