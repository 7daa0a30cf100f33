"""The DNS records a stack wants in each phase, each with the reason it exists.

Pure: the Pulumi program declares these in Route53; ``mailstack preview``
and the stack outputs show them with their reasons.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Iterable

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


def merge_txt(ours: Iterable[str], existing: Iterable[str]) -> tuple[str, ...]:
    """Our TXT values plus the existing ones we do not own (any other SPF is ours to replace)."""
    ours = tuple(ours)
    kept = [value for value in map(route53_txt, existing)
            if not value.lower().startswith("v=spf1") and value not in ours]
    return ours + tuple(kept)


def reads_zone(settings: Settings, record: Record) -> bool:
    """Whether the values declared for ``record`` depend on what the zone holds there now."""
    return record.type == "TXT" and record.name in settings.domains


def declared_values(settings: Settings, record: Record, existing: Iterable[str]) -> tuple[str, ...]:
    """The values the stack declares for ``record``, given the values the zone serves there now (Route53 form).

    The one rule the Pulumi program and ``mailstack plan`` share.
    """
    return merge_txt(record.values, existing) if reads_zone(settings, record) else record.values


def mx_for_phase(settings: Settings) -> tuple[tuple[str, ...], int, str]:
    """The MX flip: MX values, TTL and reason of the phase (old server, then the new host)."""
    if settings.phase == "provision":
        old = settings.old_server
        return ((f"{old.mx_priority} {old.host}.",), settings.cutover_ttl,
                f"mail still goes to the old server; TTL lowered to {settings.cutover_ttl} s so the flip propagates fast")
    if settings.phase == "cutover":
        return ((f"10 {settings.host.name}.",), settings.cutover_ttl,
                "mail goes to the new host; TTL kept low so a rollback propagates fast")
    return ((f"10 {settings.host.name}.",), settings.normal_ttl,
            "mail goes to the new host; the migration is over, TTL back to normal")


def route53_txt(value: str) -> str:
    """A TXT value read from Route53 (``"a" "b"``) in the form records are declared in (``a""b``)."""
    value = value.strip()
    if value.startswith('"') and value.endswith('"'):
        value = value[1:-1]
    return value.replace('" "', '""')


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
