"""The DNS plan: what a stack would change in its zone, as a value (pure).

As octoDNS's Plan: the record sets that exist, the ones the stack wants (each
with its reason), the changes between them, the hazards a reviewer must see
first, what each record the zone serves now becomes (kept, merged, replaced,
removed: the rules of :func:`mailstack.host.records.decide`), what refuses the
phase, and whether the plan is safe (thresholds, with a force override).
Values are typed (MX preference and exchange, the text of a TXT whatever its
255-character strings), so that two spellings of one record are equal.
Printing lives in :mod:`mailstack.host.plan_output`.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Union

from mailstack.host import records
from mailstack.host.hazards import Hazard, hazards_of, tag_value
from mailstack.stack.settings import PHASES, Settings

@dataclass(frozen=True, order=True)
class Mx:
    preference: int
    exchange: str

    def __str__(self) -> str:
        return f"{self.preference} {self.exchange}."


@dataclass(frozen=True, order=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str

    def __str__(self) -> str:
        return f"{self.priority} {self.weight} {self.port} {self.target}."


@dataclass(frozen=True, order=True)
class Caa:
    flags: int
    tag: str
    value: str

    def __str__(self) -> str:
        return f'{self.flags} {self.tag} "{self.value}"'


@dataclass(frozen=True, order=True)
class Txt:
    """A TXT value as one text: its 255-character strings joined."""

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, order=True)
class Plain:
    """Any other value (addresses and names normalised)."""

    text: str

    def __str__(self) -> str:
        return self.text


Value = Union[Mx, Srv, Caa, Txt, Plain]
Key = tuple[str, str, str]  # name, type, Route53 set identifier ("" for a simple record set)

_ESCAPE = re.compile(r"\\([0-7]{3}|.)")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _unescape(text: str) -> str:
    """Route53's escapes: ``\\052`` (octal) and ``\\"``."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)) if m.group(1).isdigit() else m.group(1), text)


def dns_name(name: str) -> str:
    """A name as compared here: lower case, no trailing dot, Route53 escapes undone."""
    name = _unescape(name.strip()).lower()
    return name[:-1] if name.endswith(".") and name != "." else name


def txt_text(value: str) -> str:
    """The text of a TXT value, served (``"a" "b"``) or declared (``a""b``): its strings joined."""
    value = value.strip()
    if value.startswith('"') and value.endswith('"'):
        return "".join(_unescape(part) for part in _QUOTED.findall(value))
    return "".join(value.split('""'))


def _target(name: str) -> str:
    return "" if name.strip() == "." else dns_name(name)


def parse_value(rtype: str, value: str) -> Value:
    """A record value typed by its record type; a value that does not parse is kept as text."""
    try:
        if rtype == "MX":
            preference, exchange = value.split()
            return Mx(int(preference), _target(exchange))
        if rtype == "SRV":
            priority, weight, port, target = value.split()
            return Srv(int(priority), int(weight), int(port), _target(target))
        if rtype == "CAA":
            flags, tag, rest = value.split(None, 2)
            return Caa(int(flags), tag.lower(), txt_text(rest) if rest.startswith('"') else rest)
        if rtype in ("TXT", "SPF"):
            return Txt(txt_text(value))
        if rtype in ("A", "AAAA"):
            return Plain(str(ipaddress.ip_address(value.strip())))
        if rtype in ("CNAME", "NS", "PTR"):
            return Plain(dns_name(value) + ".")
    except ValueError:
        pass
    return Plain(value.strip())


@dataclass(frozen=True)
class RecordSet:
    """One record set of a zone, typed; ``raw`` keeps the values as given (Route53's form for a read zone)."""

    name: str
    type: str
    ttl: int | None
    values: tuple[Value, ...]
    raw: tuple[str, ...] = ()
    alias: str | None = None
    set_identifier: str = ""

    @property
    def key(self) -> Key:
        return (self.name, self.type, self.set_identifier)


def record_set(name: str, rtype: str, ttl: int | None, values: Iterable[str], *, alias: str | None = None,
               set_identifier: str = "") -> RecordSet:
    """A typed record set from its name, type, TTL and values as text."""
    raw = tuple(values)
    rtype = rtype.upper()
    typed = tuple(sorted({parse_value(rtype, v) for v in raw}, key=str))
    return RecordSet(dns_name(name), rtype, ttl, typed, raw, alias, set_identifier)


def from_route53(rrset: Mapping) -> RecordSet:
    """A record set as Route53's ListResourceRecordSets returns it."""
    alias = rrset.get("AliasTarget")
    return record_set(rrset["Name"], rrset["Type"], rrset.get("TTL"),
                      [r["Value"] for r in rrset.get("ResourceRecords") or []],
                      alias=dns_name(alias["DNSName"]) if alias else None,
                      set_identifier=rrset.get("SetIdentifier", ""))


@dataclass(frozen=True)
class Desired:
    """A record set the stack declares, why, and what in it is a stand-in (None when nothing is)."""

    records: RecordSet
    reason: str
    stand_in: str | None = None
    fates: tuple[records.Fate, ...] = ()  # what each value the zone serves there now becomes
    problem: str | None = None  # why the stack must not apply (SPF over the lookup limit, a DKIM key taken)


@dataclass(frozen=True)
class Change:
    """One record set created, updated or deleted."""

    action: str  # create, update or delete
    existing: RecordSet | None
    desired: RecordSet | None
    reason: str
    stand_in: str | None = None
    takes_over: bool = False  # it changes a record set the stack did not write (counts for the thresholds)
    hazards: tuple[Hazard, ...] = ()
    fates: tuple[records.Fate, ...] = ()

    @property
    def records(self) -> RecordSet:
        return self.desired or self.existing


@dataclass(frozen=True)
class Thresholds:
    """octoDNS's safety defaults: a zone of at least ``min_existing`` record sets may not have more than
    these shares of its record sets updated or deleted, unless forced."""

    max_update_share: float = 0.3
    max_delete_share: float = 0.3
    min_existing: int = 10


@dataclass(frozen=True)
class Plan:
    """What applying the stack's phase would do to its zone."""

    zone: str
    phase: str
    existing: tuple[RecordSet, ...]
    desired: tuple[Desired, ...]
    changes: tuple[Change, ...]
    unchanged: tuple[Desired, ...]
    foreign: tuple[RecordSet, ...]
    notes: tuple[str, ...] = ()
    gate_refusals: tuple[str, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def hazards(self) -> tuple[Hazard, ...]:
        return tuple(h for change in self.changes for h in change.hazards)

    def fates(self) -> list[tuple[RecordSet, records.Fate]]:
        """What each record the zone serves now becomes, where there is something to say (not the stack's own
        values served already), record set by record set."""
        found = [(c.records, f) for c in self.changes for f in c.fates]
        found += [(d.records, f) for d in self.unchanged for f in d.fates]
        return [(rs, f) for rs, f in found if f.notable]

    @property
    def problems(self) -> tuple[str, ...]:
        """Why the phase must not be applied to this zone (the Pulumi program refuses it too)."""
        return tuple(d.problem for d in self.desired if d.problem)

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def count(self, action: str) -> int:
        return sum(1 for change in self.changes if change.action == action)

    def unsafe_reasons(self) -> tuple[str, ...]:
        """Why the plan is unsafe (empty when it is safe), as octoDNS's ``raise_if_unsafe``."""
        existing, limits = len(self.existing), self.thresholds
        if existing < limits.min_existing:
            return ()
        reasons = []
        for action, limit in (("update", limits.max_update_share), ("delete", limits.max_delete_share)):
            taken = sum(1 for change in self.changes if change.action == action and change.takes_over)
            if taken / existing > limit:
                reasons.append(f"it would {action} {taken} of the zone's {existing} record sets that the stack did "
                               f"not write ({taken / existing:.0%}, more than {limit:.0%})")
        return tuple(reasons)


def diff(zone: str, phase: str, existing: Iterable[RecordSet], desired: Iterable[Desired], *,
         owned: Mapping[Key, str], written: Mapping[Key, set], mta_sts_modes: Mapping[str, str] | None = None,
         thresholds: Thresholds = Thresholds(), notes: Iterable[str] = (),
         gate_refusals: Iterable[str] = ()) -> Plan:
    """Compare a zone with the desired record sets.

    ``owned`` maps every key the stack declares in any phase to why (an
    existing set there that is not desired now is deleted; any other is
    foreign: listed, never touched). ``written`` maps keys to the value tuples
    the stack writes there in some phase: changing anything else takes over a
    record set the stack did not write.
    """
    existing, desired = tuple(existing), tuple(desired)
    by_key = {r.key: r for r in existing}
    changes, unchanged, foreign = [], [], []
    wanted = set()
    for want in desired:
        key = want.records.key
        wanted.add(key)
        have = by_key.get(key)
        if have is not None and have.alias is None and have.values == want.records.values and have.ttl == want.records.ttl:
            unchanged.append(want)
            continue
        changes.append(Change("create" if have is None else "update", have, want.records, want.reason, want.stand_in,
                              takes_over=have is not None and have.values not in written.get(key, ()),
                              fates=want.fates))
    for have in existing:
        if have.key in wanted:
            continue
        if have.key in owned:
            changes.append(Change("delete", have, None, owned[have.key],
                                  takes_over=have.values not in written.get(have.key, ()),
                                  fates=tuple(records.Fate(str(v), records.REMOVED, owned[have.key])
                                              for v in have.values)))
        else:
            foreign.append(have)
    modes = mta_sts_modes or {}
    changes = [Change(c.action, c.existing, c.desired, c.reason, c.stand_in, c.takes_over,
                      hazards_of(c.records.name, c.records.type, c.existing, c.desired, modes), c.fates)
               for c in changes]
    return Plan(zone, phase, existing, desired, tuple(changes), tuple(unchanged),
                tuple(sorted(foreign, key=lambda r: r.key)), tuple(notes), tuple(gate_refusals), thresholds)


@dataclass(frozen=True)
class Known:
    """A value the records need (the host's address, the DKIM key) and where it comes from."""

    value: str
    source: str
    stand_in: bool = False


def declared(settings: Settings, existing: Mapping[Key, RecordSet], *, host_ip: Known,
             dkim: Known | None) -> list[Desired]:
    """The record sets the Pulumi program declares for the settings' phase, against this zone
    (the rules of :func:`mailstack.host.records.decide`)."""
    selector = settings.dns.dkim_selector
    dkim_record = records.Dkim(selector, dkim.value) if dkim else None
    out = []
    for record in records.desired_records(settings, ip=host_ip.value, dkim=dkim_record):
        have = existing.get((record.name, record.type, ""))
        is_dkim = record.name.startswith(f"{selector}._domainkey.")
        stand_in = None
        if record.type == "A" and record.name == settings.host.name and host_ip.stand_in:
            stand_in = f"address {host_ip.value} is {host_ip.source}"
        if is_dkim and dkim is not None and dkim.stand_in and have is not None:
            # The real key is known only to Pulumi: show the served one rather than a change that is not one.
            decision = records.Decision(records.Record(record.name, record.type, have.raw, record.ttl, record.reason),
                                        tuple(records.Fate(records.route53_txt(v), records.KEPT,
                                                           "served now; compared with the stack's key only where "
                                                           "it is known") for v in have.raw))
            stand_in = ("the stack's DKIM key is not known here: shown as the zone serves it, not compared; if it is "
                        f"not the stack's key, pulumi up refuses it (choose another mailstack:dns.dkim_selector or "
                        f"list {record.name} in mailstack:dns.replace)")
        else:
            decision = records.decide(settings, record, have.raw if have else ())
            if is_dkim and dkim is not None and dkim.stand_in:
                stand_in = f"DKIM key is {dkim.source}"
        chosen = decision.record
        out.append(Desired(record_set(chosen.name, chosen.type, chosen.ttl, chosen.values), chosen.reason, stand_in,
                           decision.fates, decision.problem))
    return out


def stack_plan(settings: Settings, existing: Iterable[RecordSet], *, host_ip: Known, dkim: Known | None,
               phase: str | None = None, thresholds: Thresholds = Thresholds(), notes: Iterable[str] = (),
               gate_refusals: Iterable[str] = ()) -> Plan:
    """The plan of a stack's phase (default: its configured one) against the zone's record sets."""
    existing = tuple(existing)
    by_key = {r.key: r for r in existing}
    phase = phase or settings.phase
    owned: dict[Key, str] = {}
    written: dict[Key, set] = defaultdict(set)
    per_phase = {}
    for each in PHASES:
        per_phase[each] = declared(settings.model_copy(update={"phase": each}), by_key, host_ip=host_ip, dkim=dkim)
        for want in per_phase[each]:
            owned.setdefault(want.records.key, f"the stack no longer declares it in the {phase} phase "
                                               f"(it was: {want.reason})")
            written[want.records.key].add(want.records.values)
    # Which MTA-STS policy an id stands for, read from the records each phase declares.
    modes = {tag_value(str(value), "id"): "enforce" if each == "decommission" else "testing"
             for each in PHASES for want in per_phase[each] if want.records.name.startswith("_mta-sts.")
             for value in want.records.values}
    notes = [*notes, f"host address {host_ip.value}: {host_ip.source}",
             *([f"DKIM key: {dkim.source}"] if dkim is not None else [])]
    return diff(settings.zone, phase, existing, per_phase[phase], owned=owned, written=written, mta_sts_modes=modes,
                thresholds=thresholds, notes=notes, gate_refusals=gate_refusals)
