"""Zone files from records: what a local authoritative server serves (pure)."""

from __future__ import annotations

import ipaddress
from typing import Iterable

from mailstack.host.records import Record


def _txt_strings(value: str) -> str:
    """A declared TXT value (``a""b`` for long ones) as zone-file character strings."""
    return " ".join('"' + chunk.replace("\\", "\\\\").replace('"', '\\"') + '"' for chunk in value.split('""'))


def _rdata(record: Record, value: str) -> str:
    return _txt_strings(value) if record.type == "TXT" else value


def zone_text(origin: str, records: Iterable[Record], *, nameservers: list[tuple[str, str]], serial: int = 1) -> str:
    """A zone file for ``origin`` with its SOA, NS (and glue), holding ``records`` (names absolute, no trailing dot)."""
    lines = [
        f"$ORIGIN {origin}.",
        f"@ 300 IN SOA {nameservers[0][0]}. hostmaster.{origin}. {serial} 3600 600 86400 300",
        *(f"@ 300 IN NS {name}." for name, _ in nameservers),
        *(f"{name}. 300 IN A {ip}" for name, ip in nameservers if name.endswith("." + origin)),
    ]
    for record in records:
        for value in record.values:
            lines.append(f"{record.name}. {record.ttl} IN {record.type} {_rdata(record, value)}")
    return "\n".join(lines) + "\n"


def reverse_record(ip: str, name: str, ttl: int = 3600) -> Record:
    """The PTR of an IPv4 address."""
    return Record(ipaddress.ip_address(ip).reverse_pointer, "PTR", (f"{name}.",), ttl, "reverse DNS of the host")


def reverse_zone(ip: str) -> str:
    """The /24 reverse zone an IPv4 address falls in."""
    return ipaddress.ip_address(ip).reverse_pointer.split(".", 1)[1]
