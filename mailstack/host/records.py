"""The DNS records a stack wants in each phase, each with the reason it exists.

Pure: the Pulumi program declares these in Route53; ``mailstack preview``
and the stack outputs show them with their reasons. :func:`decide` holds the
rules for what the zone already serves at those names (SPF merged, DMARC
kept, a DKIM key at the selector checked, other MX entries kept), shared by
the program and ``mailstack plan``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

from mailstack.host.hazards import tag_value
from mailstack.stack.settings import Settings

SPF_LOOKUP_LIMIT = 10  # RFC 7208 4.6.4
_LOOKUP_TERMS = re.compile(r"^(?:[+?~-])?(include:|a\b|a:|a/|mx\b|mx:|mx/|ptr\b|ptr:|exists:|redirect=)", re.I)
RELAY_SPF = {"amazonaws.com": "include:amazonses.com"}


@dataclass(frozen=True)
class Record:
    """One DNS record set: name, type, values, TTL, and why it is there."""

    name: str
    type: str
    values: tuple[str, ...]
    ttl: int
    reason: str

    @property
    def key(self) -> str:
        """A stable name for the record set (also its Pulumi resource name)."""
        return f"{self.name}-{self.type}"

    def as_dict(self) -> dict:
        data = asdict(self)
        data["values"] = list(self.values)
        return data


@dataclass(frozen=True)
class Dkim:
    """A DKIM selector and the public key record value it publishes."""

    selector: str
    txt: str


def dkim_public_key(public_key_pem: str) -> str:
    """The base64 DER body of a PEM public key: the ``p=`` of a DKIM record."""
    return "".join(line.strip() for line in public_key_pem.strip().splitlines() if not line.startswith("-----"))


def dkim_value(public_key_pem: str) -> str:
    """The DKIM TXT record value of an RSA public key."""
    return f"v=DKIM1; k=rsa; p={dkim_public_key(public_key_pem)}"


def spf_value(settings: Settings) -> str:
    """SPF of the stack's domains: old and new host until decommission, then the new host only."""
    terms = [f"a:{settings.host.name}"]
    if settings.phase != "decommission":
        old = settings.old_server
        terms.append(f"ip4:{old.ip}" if old.ip else f"a:{old.host}")
    if settings.relay:
        terms += [term for suffix, term in RELAY_SPF.items() if settings.relay.host.endswith(suffix)]
    # Softfail while two servers send; fail once only the new host does.
    terms.append("-all" if settings.phase == "decommission" else "~all")
    return "v=spf1 " + " ".join(terms)


def spf_lookups(spf: str) -> int:
    """DNS lookups an SPF record costs at the top level (includes count one each)."""
    return sum(1 for term in spf.split()[1:] if _LOOKUP_TERMS.match(term))


def mta_sts_policy(settings: Settings) -> str:
    """The MTA-STS policy file: testing while the old MX may still be used, enforce after decommission."""
    if settings.phase == "decommission":
        mode, mx, max_age = "enforce", [settings.host.name], 604800
    else:
        mode, mx, max_age = "testing", [settings.host.name, settings.old_server.host], 86400
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {host}" for host in mx), f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


def txt(text: str) -> str:
    """A TXT value as Route53 takes it: strings over 255 characters split with ``""``."""
    chunks = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
    return '""'.join(chunks)


def mx_for_phase(settings: Settings) -> tuple[tuple[str, ...], int, str]:
    """The MX flip: the stack's MX entry, TTL and reason of the phase (old server, then the new host).

    Other MX entries the zone holds are kept (see :func:`decide`)."""
    if settings.phase == "provision":
        old = settings.old_server
        return ((f"{old.mx_priority} {old.host}.",), settings.cutover_ttl,
                f"mail still goes to the old server; TTL lowered to {settings.cutover_ttl} s so the flip propagates fast")
    # The new host takes the old server's preference: other MX entries kept keep their order relative to it.
    preference = settings.old_server.mx_priority
    if settings.phase == "cutover":
        return ((f"{preference} {settings.host.name}.",), settings.cutover_ttl,
                "mail goes to the new host; TTL kept low so a rollback propagates fast")
    return ((f"{preference} {settings.host.name}.",), settings.normal_ttl,
            "mail goes to the new host; the migration is over, TTL back to normal")


def route53_txt(value: str) -> str:
    """A TXT value read from Route53 (``"a" "b"``) in the form records are declared in (``a""b``)."""
    value = value.strip()
    if value.startswith('"') and value.endswith('"'):
        value = value[1:-1]
    return value.replace('" "', '""')


def txt_text(value: str) -> str:
    """The text of a declared TXT value: its 255-character strings joined."""
    return value.replace('""', "")


# ------------------------------------------------------------ existing records: what each becomes

KEPT, MERGED, REPLACED, REMOVED = "kept", "merged", "replaced", "removed"


@dataclass(frozen=True)
class Fate:
    """What the stack does with one value the zone serves now: kept, merged, replaced or removed, and why."""

    value: str
    becomes: str
    reason: str
    notable: bool = True  # False: the stack's own value, served already (nothing to tell a reviewer)


@dataclass(frozen=True)
class Decision:
    """The record set the stack declares at one name and type, given what the zone serves there now.

    ``fates`` say what each existing value becomes; ``overwrite`` is whether
    the stack may write over the existing set (the rules have read it and
    decided from it); ``problem`` is why the stack must not apply at all.
    """

    record: Record
    fates: tuple[Fate, ...] = ()
    overwrite: bool = False
    problem: str | None = None


def decide(settings: Settings, record: Record, existing: Iterable[str]) -> Decision:
    """What the stack declares for ``record`` given the values the zone serves there now (Route53's form).

    The one rule the Pulumi program and ``mailstack plan`` share: SPF
    mechanisms merged, an existing DMARC kept and an existing DKIM key at the
    selector refused unless listed in ``dns.replace``, other MX entries kept
    unless listed in ``dns.remove_mx``, other TXT values at the apex kept.
    """
    existing = tuple(route53_txt(v) if record.type == "TXT" else v.strip() for v in existing)
    if not existing:
        return Decision(record)
    if record.type == "MX":
        return _decide_mx(settings, record, existing)
    if record.type == "TXT" and record.name in settings.domains:
        return _decide_apex_txt(settings, record, existing)
    if record.type == "TXT" and record.name.startswith("_dmarc."):
        return _decide_dmarc(settings, record, existing)
    if record.type == "TXT" and record.name.startswith(f"{settings.dns.dkim_selector}._domainkey."):
        return _decide_dkim(settings, record, existing)
    same = {_comparable(record.type, v) for v in existing} == {_comparable(record.type, v) for v in record.values}
    fates = tuple(Fate(v, KEPT, "the stack's value already", notable=False) if same else
                  Fate(v, REPLACED, f"this name is the new host's ({record.reason})") for v in existing)
    return Decision(record, fates, overwrite=True)


def _comparable(rtype: str, value: str) -> str:
    if rtype == "TXT":
        return txt_text(value)
    return " ".join(value.lower().rstrip(".").split()).replace(". ", " ")


# ------------------------------------------------------------------ MX


def _mx_entry(value: str) -> tuple[int, str] | None:
    try:
        preference, exchange = value.split()
        return int(preference), exchange.lower().rstrip(".")
    except ValueError:
        return None


def _decide_mx(settings: Settings, record: Record, existing: tuple[str, ...]) -> Decision:
    """The phase's MX (the flip) replaces the old server's and the new host's entries; others stay unless listed."""
    ours = {_mx_entry(v) for v in record.values}
    stack_hosts = {settings.old_server.host, settings.host.name}
    remove = set(settings.dns.remove_mx)
    preferred = min(p for p, _ in ours)
    values, fates = list(record.values), []
    for value in existing:
        entry = _mx_entry(value)
        if entry in ours:
            fates.append(Fate(value, KEPT, "the stack's MX of this phase", notable=False))
        elif entry is not None and entry[1] in stack_hosts:
            what = "the old server's" if entry[1] == settings.old_server.host else "the new host's"
            fates.append(Fate(value, REPLACED, f"{what} MX: {record.reason}"))
        elif entry is not None and entry[1] in remove:
            fates.append(Fate(value, REMOVED, "listed in mailstack:dns.remove_mx"))
        else:
            note = (f"; preference {entry[0]} is below the stack's {preferred}: senders try it first"
                    if entry is not None and entry[0] < preferred else "")
            fates.append(Fate(value, KEPT, "another MX (a backup or a filtering service): kept unless listed in "
                                           f"mailstack:dns.remove_mx{note}"))
            if value not in values:
                values.append(value)
    kept = sum(1 for f in fates if f.becomes == KEPT and _mx_entry(f.value) not in ours)
    reason = record.reason + (f"; {kept} other MX entr{'y' if kept == 1 else 'ies'} kept" if kept else "")
    return Decision(Record(record.name, record.type, tuple(values), record.ttl, reason), tuple(fates), overwrite=True)


# ------------------------------------------------------------------ SPF

_MODIFIER = re.compile(r"^[a-z][a-z0-9_.-]*=", re.I)
_ALL = re.compile(r"^([+?~-]?)all$", re.I)
ALL_STRICTNESS = "+?~-"  # ascending: -all is the strictest


def _is_spf(value: str) -> bool:
    text = txt_text(value).strip().lower()
    return text == "v=spf1" or text.startswith("v=spf1 ")


def _body(term: str) -> str:
    """A mechanism without its qualifier, lower case (``-ip4:X`` -> ``ip4:x``)."""
    return (term[1:] if term[:1] in "+?~-" else term).lower()


def _qualified(term: str) -> str:
    """A mechanism with its qualifier spelled out, lower case (``mx`` and ``+MX`` are one)."""
    return (term if term[:1] in "+?~-" else "+" + term).lower()


def old_server_terms(settings: Settings) -> set[str]:
    """SPF mechanisms (bodies) that name the old server: removed from the zone's SPF at decommission."""
    old = settings.old_server
    names = {f"a:{old.host}", f"mx:{old.host}", f"ptr:{old.host}"}
    if old.ip:
        names |= {f"ip4:{old.ip}", f"ip4:{old.ip}/32"}
    return names


def merge_spf(settings: Settings, ours: str, existing: Iterable[str]) -> tuple[str, tuple[Fate, ...]]:
    """One SPF record: the zone's mechanisms and modifiers kept (the old server's dropped at decommission),
    the stack's added, the strictest ``all`` of both; with what each existing SPF record became."""
    existing = [txt_text(v) for v in existing]
    our_terms = ours.split()[1:]
    our_all = next(t for t in our_terms if _ALL.match(t))
    old_terms = old_server_terms(settings) if settings.phase == "decommission" else set()
    mechanisms, modifiers, alls, dropped = [], [], [our_all], []
    seen: set[str] = set()
    for text in existing:
        for term in text.split()[1:]:
            if _ALL.match(term):
                alls.append(term)
            elif _MODIFIER.match(term):
                if term.lower() not in {m.lower() for m in modifiers}:
                    modifiers.append(term)
            elif _body(term) in old_terms:
                dropped.append(term)
            elif _qualified(term) not in seen:
                seen.add(_qualified(term))
                mechanisms.append(term)
    added = [t for t in our_terms if not _ALL.match(t) and _qualified(t) not in seen]
    strictest = max(alls, key=lambda t: ALL_STRICTNESS.index(_ALL.match(t).group(1) or "+"))
    # RFC 7208 6.1: redirect= is ignored when an all is present; a record that redirects keeps doing so.
    redirects = any(m.lower().startswith("redirect=") for m in modifiers)
    zone_has_all = len(alls) > 1
    final = [] if redirects and not zone_has_all else [strictest.lower()]
    merged = "v=spf1 " + " ".join([*mechanisms, *added, *modifiers, *final])
    fates = []
    for text in existing:
        if text == merged:
            fates.append(Fate(text, KEPT, "SPF already as the stack merges it", notable=False))
            continue
        parts = []
        if added:
            parts.append(f"adds {' '.join(added)}")
        if dropped:
            parts.append(f"drops the old server's {' '.join(dict.fromkeys(dropped))} (decommission)")
        if not final:
            parts.append("keeps its redirect= (no all added: it would disable the redirect)")
        elif strictest.lower() != our_all.lower():
            parts.append(f"keeps the zone's {strictest.lower()} (stricter than the stack's {our_all})")
        elif any(a.lower() != strictest.lower() for a in alls[1:]):
            parts.append(f"tightens the zone's all to the stack's {strictest.lower()}")
        if len(existing) > 1:
            parts.append(f"{len(existing)} SPF records are a permanent error (RFC 7208 3.2): merged into one")
        fates.append(Fate(text, MERGED, "every other mechanism and modifier kept; " + "; ".join(parts)))
    return merged, tuple(fates)


def _decide_apex_txt(settings: Settings, record: Record, existing: tuple[str, ...]) -> Decision:
    ours = next(txt_text(v) for v in record.values if _is_spf(v))
    spfs = [v for v in existing if _is_spf(v)]
    merged, fates = merge_spf(settings, ours, spfs) if spfs else (ours, ())
    others = [v for v in existing if not _is_spf(v)]
    fates = fates + tuple(Fate(v, KEPT, "not SPF (a site verification or another service's): not the stack's")
                          for v in others)
    values = (txt(merged), *(v for v in others if txt_text(v) != merged))
    problem = None
    lookups = spf_lookups(merged)
    if lookups > SPF_LOOKUP_LIMIT:
        problem = (f"{record.name} TXT: the SPF record merged with the zone's would need {lookups} DNS lookups "
                   f"(include, a, mx, ptr, exists, redirect), over RFC 7208's limit of {SPF_LOOKUP_LIMIT}: "
                   f"{merged!r}; remove or flatten (ip4:/ip6:) some of the zone's terms first")
    reason = record.reason + ("; the zone's SPF mechanisms kept" if spfs else "")
    return Decision(Record(record.name, record.type, values, record.ttl, reason), fates, overwrite=True,
                    problem=problem)


# ------------------------------------------------------------------ DMARC and DKIM


def _dkim_key(text: str) -> str:
    return re.sub(r"\s", "", tag_value(text, "p") or "")


def _decide_dmarc(settings: Settings, record: Record, existing: tuple[str, ...]) -> Decision:
    """An existing DMARC record is kept as it is unless its name is listed in ``dns.replace``."""
    if {txt_text(v) for v in existing} == {txt_text(v) for v in record.values}:
        return Decision(record, tuple(Fate(v, KEPT, "the stack's DMARC record already", notable=False)
                                      for v in existing), overwrite=True)
    if record.name in settings.dns.replace:
        fates = tuple(Fate(v, REPLACED, f"{record.name} is listed in mailstack:dns.replace") for v in existing)
        return Decision(record, fates, overwrite=True)
    ours = txt_text(record.values[0])
    fates = tuple(Fate(v, KEPT, f"an existing DMARC record is never replaced unless {record.name} is listed in "
                                f"mailstack:dns.replace (the stack's would be {ours!r})") for v in existing)
    policy = next((tag_value(txt_text(v), "p") for v in existing if txt_text(v).lower().startswith("v=dmarc1")), None)
    reason = "DMARC: the zone's record kept" + (f" (p={policy})" if policy else "")
    # Declared as it is served (the resource keeps its name in every phase; nothing changes).
    return Decision(Record(record.name, record.type, existing, record.ttl, reason), fates, overwrite=True)


def _decide_dkim(settings: Settings, record: Record, existing: tuple[str, ...]) -> Decision:
    """The stack's key at its selector; another key there is refused unless the name is listed in ``dns.replace``."""
    ours = _dkim_key(txt_text(record.values[0]))
    if {_dkim_key(txt_text(v)) for v in existing} == {ours}:
        return Decision(record, tuple(Fate(v, KEPT, "the stack's DKIM key already", notable=False)
                                      for v in existing), overwrite=True)
    if record.name in settings.dns.replace:
        fates = tuple(Fate(v, REPLACED, f"{record.name} is listed in mailstack:dns.replace") for v in existing)
        return Decision(record, fates, overwrite=True)
    theirs = _dkim_key(txt_text(existing[0]))
    problem = (f"{record.name} TXT: the zone already publishes another DKIM key at selector "
               f"{settings.dns.dkim_selector} (p={theirs[:16]}{'…' if len(theirs) > 16 else ''}); the new host "
               "would sign with a key receivers cannot find there. Choose another mailstack:dns.dkim_selector, or "
               f"list {record.name} in mailstack:dns.replace to replace it")
    fates = tuple(Fate(v, KEPT, "another key at the stack's selector: refused, never replaced") for v in existing)
    return Decision(Record(record.name, record.type, existing, record.ttl, record.reason), fates, overwrite=False,
                    problem=problem)


def decide_all(settings: Settings, wanted: Iterable[Record],
               existing: Mapping[str, Iterable[str]]) -> tuple[list[Decision], list[str]]:
    """Every record's decision against the zone (``Record.key -> values`` served), and every problem found."""
    decisions = [decide(settings, r, existing.get(r.key, ())) for r in wanted]
    return decisions, [d.problem for d in decisions if d.problem]


WEB_LABELS = ("mta-sts", "autoconfig", "autodiscover")


def certificate_names(settings: Settings) -> list[str]:
    """Names the host's certificate must cover: the host, and the web names aliased to it."""
    web = [f"{label}.{domain}" for domain in settings.domains for label in WEB_LABELS] if settings.web else []
    return [settings.host.name, *web]


def domain_records(settings: Settings, domain: str, dkim: Dkim | None) -> list[Record]:
    """Every record of one mail domain for the stack's phase."""
    host, ttl, contact = settings.host.name, settings.normal_ttl, settings.contact
    mx_values, mx_ttl, mx_reason = mx_for_phase(settings)
    spf = spf_value(settings)
    records = [
        Record(domain, "MX", mx_values, mx_ttl, mx_reason),
        Record(domain, "TXT", (txt(spf),), ttl,
               "SPF: only the new host may send" if settings.phase == "decommission"
               else "SPF: the old and the new host may both send during the migration"),
        Record(f"_dmarc.{domain}", "TXT", (txt(f"v=DMARC1; p={settings.dmarc_policy}; rua=mailto:{contact}"),), ttl,
               f"DMARC: policy {settings.dmarc_policy} for mail failing SPF and DKIM; reports to {contact}"),
        Record(f"_smtp._tls.{domain}", "TXT", (txt(f"v=TLSRPTv1; rua=mailto:{contact}"),), ttl,
               f"TLS-RPT: senders report TLS failures to {contact}"),
        Record(f"_submissions._tcp.{domain}", "SRV", (f"0 1 465 {host}.",), ttl,
               "RFC 6186: clients find submission over TLS (465) on the new host"),
        Record(f"_submission._tcp.{domain}", "SRV", (f"0 1 587 {host}.",), ttl,
               "RFC 6186: clients find submission with STARTTLS (587) on the new host"),
        Record(f"_imaps._tcp.{domain}", "SRV", (f"0 1 993 {host}.",), ttl, "RFC 6186: clients find IMAP over TLS (993)"),
        Record(f"_pop3s._tcp.{domain}", "SRV", (f"0 1 995 {host}.",), ttl, "RFC 6186: clients find POP3 over TLS (995)"),
        Record(f"_imap._tcp.{domain}", "SRV", ("0 0 0 .",), ttl, "RFC 6186: plaintext IMAP (143) is not offered"),
        Record(f"_pop3._tcp.{domain}", "SRV", ("0 0 0 .",), ttl, "RFC 6186: plaintext POP3 (110) is not offered"),
    ]
    if settings.web:
        policy_id = hashlib.sha256(mta_sts_policy(settings).encode()).hexdigest()[:20]
        records += [
            Record(f"_mta-sts.{domain}", "TXT", (txt(f"v=STSv1; id={policy_id}"),), ttl,
                   f"MTA-STS: policy in {'enforce' if settings.phase == 'decommission' else 'testing'} mode; "
                   "the id changes with the policy"),
            *(Record(f"{label}.{domain}", "CNAME", (f"{host}.",), ttl, why) for label, why in zip(WEB_LABELS, (
                "MTA-STS: the new host serves the policy over HTTPS",
                "Thunderbird-style autoconfig served by the new host",
                "Outlook autodiscover served by the new host",
            ))),
        ]
    if dkim is not None:
        records.append(Record(f"{dkim.selector}._domainkey.{domain}", "TXT", (txt(dkim.txt),), ttl,
                              f"DKIM: public key of selector {dkim.selector}, signing outgoing mail on the new host"))
    return records


def host_records(settings: Settings, ip: str) -> list[Record]:
    """Records of the new host itself."""
    return [
        Record(settings.host.name, "A", (ip,), settings.normal_ttl,
               "address of the new mail host; its PTR points back to this name"),
        Record(settings.host.name, "CAA", ('0 issue "letsencrypt.org"', f'0 iodef "mailto:{settings.contact}"'),
               settings.normal_ttl, "only Let's Encrypt may issue certificates for the host (and the names aliased to it)"),
    ]


def old_server_records(settings: Settings) -> list[Record]:
    """The old server's own A record, when it is in the zone: kept through the overlap, gone at decommission."""
    old = settings.old_server
    in_zone = old.host == settings.zone or old.host.endswith("." + settings.zone)
    if settings.phase == "decommission" or not in_zone or old.ip is None:
        return []
    return [Record(old.host, "A", (str(old.ip),), settings.normal_ttl,
                   "the old server stays reachable by name (sync, stale MX caches) until decommission")]


def desired_records(settings: Settings, *, ip: str, dkim: Dkim | None = None) -> list[Record]:
    """Every record the stack declares in its phase, host records first."""
    return (host_records(settings, ip) + old_server_records(settings)
            + [r for d in settings.domains for r in domain_records(settings, d, dkim)])
