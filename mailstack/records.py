"""The DNS records a stack wants, each with the reason it exists."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mailstack.settings import Settings


@dataclass(frozen=True)
class Record:
    """One DNS record set: name, type, values, TTL, and why it is there."""

    name: str
    type: str
    values: tuple[str, ...]
    ttl: int
    reason: str
    managed: bool = True

    def as_dict(self) -> dict:
        data = asdict(self)
        data["values"] = list(self.values)
        return data


def host_records(settings: Settings, ip: str) -> list[Record]:
    """Records of the new host itself, declared from the provision phase on."""
    return [
        Record(settings.host.name, "A", (ip,), settings.normal_ttl,
               "address of the new mail host; its PTR points back to this name"),
    ]


def mail_records(settings: Settings) -> list[Record]:
    """MX and SPF of every domain for the current phase.

    Planned and shown in the stack outputs; declared in Route53 by the
    lifecycle step, which also keeps records the stack does not own.
    """
    old, new = settings.old_server, settings.host.name
    flipped = settings.phase in ("cutover", "decommission")
    mx_ttl = settings.normal_ttl if settings.phase == "decommission" else settings.cutover_ttl
    if flipped:
        mx = (f"10 {new}.",)
        mx_reason = "mail for the domain goes to the new host"
    else:
        mx = (f"{old.mx_priority} {old.host}.",)
        mx_reason = f"mail still goes to the old server; TTL lowered to {settings.cutover_ttl} s so the flip propagates fast"
    old_spf = f"ip4:{old.ip}" if old.ip else f"a:{old.host}"
    if settings.phase == "decommission":
        spf = f"v=spf1 a:{new} -all"
        spf_reason = "only the new host sends for the domain"
    else:
        spf = f"v=spf1 a:{new} {old_spf} ~all"
        spf_reason = "both the old and the new host may send during the migration"
    records = []
    for domain in settings.domains:
        records.append(Record(domain, "MX", mx, mx_ttl, mx_reason, managed=False))
        records.append(Record(domain, "TXT", (f'"{spf}"',), settings.normal_ttl, spf_reason, managed=False))
    return records
