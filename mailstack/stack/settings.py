"""What a stack declares: one typed, validated settings model.

The Pulumi program reads it from Pulumi config; the CLI reads it from
``stacks/Pulumi.<env>.yaml``. Both go through :func:`settings_from_values`, so
an invalid value gives the same message, naming the key and the reason, before
any resource is declared.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from mailstack.imap.endpoint import IMAP_SCHEMES, POP_SCHEMES, Endpoint, parse_endpoint
from mailstack.stack.domains import normalise_domain
from mailstack.problems import InputError, Problem

NAMESPACE = "mailstack"
PHASES = ("provision", "cutover", "decommission")

def _fqdn(value: str) -> str:
    try:
        return normalise_domain(value, example="mail.example.com")
    except ValueError as exc:
        raise ValueError(f"{value!r} {exc}") from None


def _instance_type(value: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9-]*\d[a-z0-9-]*\.[a-z0-9]+", value):
        raise ValueError(f"{value!r} is not an EC2 instance type (e.g. t3.small, t4g.small)")
    return value


def _pattern(regex: str, example: str):
    def check(value: str) -> str:
        if not re.fullmatch(regex, value):
            raise ValueError(f"{value!r} does not look like {example}")
        return value

    return AfterValidator(check)


def _quota(value: str) -> str:
    from mailstack.stack.quota import parse_quota

    parse_quota(value)
    return value


def _hh_mm(value: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError(f"{value!r} is not a 24-hour time HH:MM (UTC), e.g. 03:00")
    return value


def _replace_acknowledgement(value: str) -> str:
    """``YYYY-MM-DD reason``: the date the operator allowed a host replacement, and why."""
    parts = value.split(None, 1)
    try:
        date.fromisoformat(parts[0] if parts else "")
    except ValueError:
        raise ValueError(f"{value!r} does not start with a date: write 'YYYY-MM-DD reason', "
                         "e.g. '2026-12-06 move to the newer Debian image'") from None
    if len(parts) < 2 or not parts[1].strip():
        raise ValueError(f"{value!r} gives no reason: write 'YYYY-MM-DD reason'")
    return value.strip()


Fqdn = Annotated[str, AfterValidator(_fqdn)]
InstanceType = Annotated[str, AfterValidator(_instance_type)]
Phase = Literal["provision", "cutover", "decommission"]

def _imap_endpoint(value: Any) -> Endpoint:
    return value if isinstance(value, Endpoint) else parse_endpoint(value, IMAP_SCHEMES)


def _pop_endpoint(value: Any) -> Endpoint:
    return value if isinstance(value, Endpoint) else parse_endpoint(value, POP_SCHEMES)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class HostSettings(_Model):
    """The new mail host."""

    name: Fqdn = Field(description="Host name of the new mail host; its A record and PTR.")
    instance_type: InstanceType = Field("t3.small", description="EC2 instance type.")
    ami: Annotated[str, _pattern(r"ami-[0-9a-f]{8,17}", "an AMI id (ami-0123456789abcdef0)")] | None = Field(
        None, description="Pin an AMI; default: newest official Debian 12 image at creation."
    )
    root_volume_gb: int = Field(16, ge=8, le=1024, description="Encrypted root volume size.")
    mail_volume_gb: int = Field(50, ge=1, le=16384, description="Encrypted mail volume size (Maildirs).")
    mail_volume_iops: int = Field(3000, ge=3000, le=16000, description="gp3 IOPS of the mail volume.")
    subnet_id: Annotated[str, _pattern(r"subnet-[0-9a-f]{8,17}", "a subnet id (subnet-0123abcd)")] | None = Field(
        None, description="Subnet for the host; default: the default VPC's subnet in availability_zone."
    )
    availability_zone: Annotated[str, _pattern(r"[a-z]{2}(-[a-z]+)+-\d[a-z]", "an availability zone (eu-west-1a)")] | None = Field(
        None, description="Availability zone of the host and its mail volume; default: the existing mail volume's, "
                          "and on the first deploy the region's first available zone (output availability_zone)."
    )
    replace: Annotated[str, AfterValidator(_replace_acknowledgement)] | None = Field(
        None, description="'YYYY-MM-DD reason': allows this update to replace the host (a new AMI, subnet or zone), "
                          "following the README's replacement procedure; honoured for two days from its date."
    )

    @property
    def replace_date(self) -> date | None:
        """The date of the ``replace`` acknowledgement, if one is set."""
        return date.fromisoformat(self.replace.split()[0]) if self.replace else None

    @property
    def architecture(self) -> str:
        """``arm64`` for Graviton instance types (t4g, m7g, c7gn...), else ``x86_64``."""
        family = self.instance_type.split(".", 1)[0]
        return "arm64" if family == "a1" or re.fullmatch(r"[a-z]+\d+[a-z-]*g[a-z-]*", family) else "x86_64"


class OldServer(_Model):
    """The server mail is moving away from."""

    host: Fqdn = Field(description="Host name of the old server (its current MX).")
    ip: ipaddress.IPv4Address | None = Field(None, description="Its IPv4 address, for SPF during the overlap.")
    imap: Annotated[Endpoint, BeforeValidator(_imap_endpoint)] = Field(
        description="IMAP endpoint to sync from, e.g. imaps://mail.example.net:993."
    )
    pop: Annotated[Endpoint, BeforeValidator(_pop_endpoint)] | None = Field(
        None, description="POP3 endpoint, e.g. pop3s://mail.example.net:995 (optional)."
    )
    instance_id: Annotated[str, _pattern(r"i-[0-9a-f]{8}([0-9a-f]{9})?", "an EC2 instance id (i-0123456789abcdef0)")] | None = Field(
        None, description="EC2 instance id when the old server is in this AWS account."
    )
    mx_priority: int = Field(10, ge=0, le=65535, description="Priority of the old MX record.")


class _FieldErrors(ValueError):
    """Cross-field problems of one model: (field, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(m for _, m in problems))


class Relay(_Model):
    """A smarthost for outgoing mail, for accounts whose port 25 is still restricted."""

    host: Fqdn = Field(description="Relay host, e.g. email-smtp.eu-west-1.amazonaws.com.")
    port: Literal[25, 465, 587, 2587] = Field(587, description="Relay port.")
    # Postfix's sasl_passwd reads "host user:password": a space or colon in the user would break it.
    username: Annotated[str, _pattern(r"[^\s:]{1,256}", "an SMTP user name without spaces or colons")] | None = Field(
        None, description="SMTP AUTH user; its password is the secret mailstack:relay_password.")


DEFAULT_DKIM_SELECTOR = "mailstack"
"""The DKIM selector when ``dns.dkim_selector`` gives none: not a common default (``mail``, ``default``,
``selector1``...), so the new host's key does not land on the old server's."""


def _dns_label(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", value):
        raise ValueError(f"{value!r} is not a DNS label (letters, digits and inner hyphens, at most 63)")
    return value


def _record_name(value: str) -> str:
    name = value.strip().lower().rstrip(".") if isinstance(value, str) else value
    if not isinstance(name, str) or not re.fullmatch(r"([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}", name):
        raise ValueError(f"{value!r} is not a DNS name such as _dmarc.example.com")
    return name


RecordName = Annotated[str, AfterValidator(_record_name)]


class DnsSettings(_Model):
    """How the stack treats records the zone already holds (the rules are in mailstack/host/records.py)."""

    dkim_selector: Annotated[str, BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v),
                             AfterValidator(_dns_label)] = Field(
        DEFAULT_DKIM_SELECTOR, description="DKIM selector of the new host: its key is published at "
                                           "<selector>._domainkey.<domain> and OpenDKIM signs with it.")
    replace: list[RecordName] = Field(default_factory=list, description=(
        "Names whose existing DMARC or DKIM record the stack may replace, e.g. _dmarc.example.org; "
        "without it an existing one is kept (DMARC) or refused (DKIM with another key)."))
    remove_mx: list[Fqdn] = Field(default_factory=list, description=(
        "MX exchanges (host names) the stack removes from the domains' MX sets; other MX entries than the "
        "old server's are kept."))


AWS_REGION = r"[a-z]{2}(-[a-z]+)+-\d"
SES_SIMULATOR = "success@simulator.amazonses.com"
"""SES's mailbox simulator: accepted in the sandbox too, never a real mailbox, not counted against sending quotas."""


class SesRelay(_Model):
    """Outgoing mail through Amazon SES: the stack verifies each mail domain (Easy DKIM) and makes SMTP credentials."""

    region: Annotated[str, _pattern(AWS_REGION, "an AWS region (eu-west-1)")] | None = Field(
        None, description="Region of the SES endpoint; default: the stack's aws:region.")

    def smtp_host(self, stack_region: str) -> str:
        """SES's SMTP endpoint of the region (STARTTLS on 587)."""
        return f"email-smtp.{self.region or stack_region}.amazonaws.com"

    def relay(self, stack_region: str, smtp_user: str) -> "Relay":
        """SES as the host's relay: its SMTP endpoint on 587, the SMTP user the stack made (an access key id)."""
        return Relay(host=self.smtp_host(stack_region), port=587, username=smtp_user)


class Port25Lift(_Model):
    """AWS lifted EC2's port-25 restriction for this account: the host delivers directly to other domains' MX."""

    lifted_on: date = Field(description="When AWS confirmed the lift (YYYY-MM-DD).")
    case: Annotated[str, _pattern(r"[A-Za-z0-9][A-Za-z0-9 ._/#-]{2,63}", "an AWS support case id (e.g. 171234567800123)")] = Field(
        description="The AWS support case that lifted it, so a reviewer can find it.")


@dataclass(frozen=True)
class OutboundRoute:
    """How mail leaves the host, as the stack declares it: ``ses``, ``relay`` or ``port25``."""

    kind: Literal["ses", "relay", "port25"]
    summary: str
    probe: str | None


def probe_problem(address: str, domains) -> str | None:
    """Why ``address`` cannot receive verify's outbound probe (None: it can): it must be an address elsewhere."""
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", address):
        return f"{address!r} is not an email address"
    if address.rsplit("@", 1)[1].lower().rstrip(".") in domains:
        return f"{address} is in a domain of this stack: mail to it never leaves the host; give an address elsewhere"
    return None


OUTBOUND_KEYS = ("ses", "relay", "port25_lifted")
"""The settings that declare outgoing mail; a stack declares at most one (the cutover needs exactly one)."""


class Snapshots(_Model):
    """Daily snapshots of the mail volume (Data Lifecycle Manager)."""

    time: Annotated[str, AfterValidator(_hh_mm)] = Field("03:00", description="Daily snapshot time, UTC.")
    keep: int = Field(14, ge=1, le=1000, description="Snapshots kept.")


class Settings(_Model):
    """Everything one stack (environment) declares."""

    domains: list[Fqdn] = Field(min_length=1, description="Mail domains moving to the new host; the first is primary.")
    zone: Fqdn = Field(description="Route53 hosted zone holding the domains' records.")
    host: HostSettings
    old_server: OldServer
    roster: str = Field(description="Mailbox roster file (CSV, YAML or XLSX), relative to the project.")
    phase: Phase = Field("provision", description="Lifecycle phase: provision, cutover or decommission.")
    cutover_ttl: int = Field(300, ge=30, le=3600, description="MX TTL (s) while the flip is pending.")
    normal_ttl: int = Field(3600, ge=60, le=86400, description="TTL (s) of records outside the flip.")
    overlap_days: int = Field(14, ge=1, le=90, description="Days the old server is kept after the new MX is served.")
    quiet_days: int = Field(3, ge=1, le=30, description="Days without new mail on the old server before decommission.")
    evidence_max_age_hours: int = Field(24, ge=1, le=168, description="Verification evidence older than this blocks cutover.")
    default_quota: Annotated[str, AfterValidator(_quota)] = Field("1G", description="Quota of roster rows that give none (e.g. 2G, 500M).")
    admin_email: str | None = Field(None, description="Contact for certificates and reports; default postmaster@<primary domain>.")
    relay: Relay | None = Field(None, description="Outgoing mail through this SMTP relay (one of ses, relay, port25_lifted).")
    ses: SesRelay | None = Field(None, description="Outgoing mail through Amazon SES (one of ses, relay, port25_lifted).")
    port25_lifted: Port25Lift | None = Field(
        None, description="AWS lifted the port-25 block: direct delivery (one of ses, relay, port25_lifted).")
    outbound_probe: str | None = Field(
        None, description="External address verify sends its outbound probe to; default for SES: its mailbox simulator.")
    web: bool = Field(True, description="Serve autoconfig/autodiscover and the MTA-STS policy (opens 80 and 443).")
    dmarc_policy: Literal["none", "quarantine", "reject"] = Field("none", description="DMARC policy published for the domains.")
    snapshots: Snapshots = Field(default_factory=Snapshots)
    dns: DnsSettings = Field(default_factory=DnsSettings)
    exempt_mailboxes: dict[str, str] = Field(
        default_factory=dict, description="Roster addresses the gates do not require a sync, comparison or watch of, "
                                          "each with the reason (for example a mailbox created new on the new host).")

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        problems = []
        if len(set(self.domains)) != len(self.domains):
            problems.append(("domains", "a domain is listed twice"))
        outside = [d for d in [*self.domains, self.host.name] if not _within(d, self.zone)]
        if outside:
            problems.append(("zone", f"{', '.join(outside)} not inside the zone {self.zone}: every domain and the host name must be in it"))
        if self.host.name == self.old_server.host:
            problems.append(("host.name", f"the new host {self.host.name} has the old server's name; give the new host its own name"))
        if self.cutover_ttl > self.normal_ttl:
            problems.append(("cutover_ttl", f"{self.cutover_ttl} is above normal_ttl {self.normal_ttl}: the cutover TTL must be the lower one"))
        if self.admin_email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", self.admin_email):
            problems.append(("admin_email", f"{self.admin_email!r} is not an email address"))
        declared = [key for key in OUTBOUND_KEYS if getattr(self, key) is not None]
        if len(declared) > 1:
            problems.append((declared[1], f"{' and '.join(declared)} are both declared: outgoing mail takes one way; "
                                          "keep one of ses, relay or port25_lifted"))
        if self.outbound_probe is not None and (problem := probe_problem(self.outbound_probe, self.domains)):
            problems.append(("outbound_probe", problem))
        for address, reason in self.exempt_mailboxes.items():
            if "@" not in address:
                problems.append(("exempt_mailboxes", f"{address!r} is not an address: give the mailbox's roster address"))
            if not str(reason).strip():
                problems.append(("exempt_mailboxes", f"{address}: give the reason this mailbox is not migrated"))
        replaceable = {f"_dmarc.{d}" for d in self.domains} | {f"{self.dns.dkim_selector}._domainkey.{d}" for d in self.domains}
        for name in self.dns.replace:
            if name not in replaceable:
                problems.append(("dns.replace", f"{name} is not a DMARC or DKIM name of the stack "
                                                f"(_dmarc.<domain> or {self.dns.dkim_selector}._domainkey.<domain>)"))
        for name in self.dns.remove_mx:
            if name in (self.host.name, self.old_server.host):
                problems.append(("dns.remove_mx", f"{name} is the {'new host' if name == self.host.name else 'old server'}: "
                                                  "the stack moves that MX itself; list other exchanges only"))
        if problems:
            raise _FieldErrors(problems)
        return self

    @property
    def primary_domain(self) -> str:
        return self.domains[0]

    @property
    def contact(self) -> str:
        return self.admin_email or f"postmaster@{self.primary_domain}"

    @property
    def outbound(self) -> OutboundRoute | None:
        """How mail leaves the host, or None when the stack declares nothing (valid for provision, not for cutover)."""
        if self.ses is not None:
            region = self.ses.region or "the stack's region"
            return OutboundRoute("ses", f"Amazon SES ({region})", self.outbound_probe or SES_SIMULATOR)
        if self.relay is not None:
            return OutboundRoute("relay", f"relay {self.relay.host}:{self.relay.port}", self.outbound_probe)
        if self.port25_lifted is not None:
            lift = self.port25_lifted
            return OutboundRoute("port25", f"direct on port 25 (lifted {lift.lifted_on.isoformat()}, AWS case {lift.case})",
                                 self.outbound_probe)
        return None


def _within(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


SETTING_KEYS = tuple(Settings.model_fields) + ("relay_password",)
SECRET_KEYS = ("relay_password",)


# ---------------------------------------------------------------- loading


def settings_from_values(
    values: Mapping[str, Any],
    *,
    source: str,
    lines: Mapping[str, int] | None = None,
) -> Settings:
    """Validate raw stack values (keys without the ``mailstack:`` prefix).

    Raises :class:`InputError` listing every problem as ``source[:line]:
    mailstack:key.path: reason``.
    """
    values = {k: v for k, v in values.items() if k not in SECRET_KEYS}
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = [p for err in exc.errors() for p in _problems(err, source, lines or {})]
        raise InputError(f"stack settings {source}", problems) from None


def _problems(err: Mapping[str, Any], source: str, lines: Mapping[str, int]) -> list[Problem]:
    loc = [str(x) for x in err["loc"] if not str(x).startswith("function-")]
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _FieldErrors):
        return [_located([*loc, *field.split(".")], message, source, lines) for field, message in ctx_error.problems]
    message = err["msg"]
    if isinstance(ctx_error, ValueError):
        message = str(ctx_error)
    elif err["type"] == "missing":
        message = "is required"
    elif err["type"] == "extra_forbidden":
        message = "is not a known setting (see the settings reference in README.md)"
    elif "input" in err and not isinstance(err["input"], (dict, list)):
        message = f"{message} (got {err['input']!r})"
    return [_located(loc, message, source, lines)]


def _located(loc: list[str], message: str, source: str, lines: Mapping[str, int]) -> Problem:
    key = f"{NAMESPACE}:{'.'.join(loc)}" if loc else NAMESPACE
    where = source
    for n in range(len(loc), 0, -1):
        line = lines.get(".".join(loc[:n]))
        if line:
            where = f"{source}:{line}"
            break
    return Problem(where, f"{key}: {message}")


def _config_value(raw: Any) -> Any:
    """Pulumi passes structured config as JSON text; plain values stay strings."""
    import json

    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def settings_from_pulumi() -> Settings:
    """Load the settings of the running Pulumi stack (``mailstack:*`` config)."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env() or {})
    values: dict[str, Any] = {}
    for full_key in keys:
        namespace, _, key = full_key.partition(":")
        if namespace == NAMESPACE:
            values[key] = _config_value(runtime_config.get_config(full_key))
    problems = []
    if "relay_password" in values and not runtime_config.is_config_secret(f"{NAMESPACE}:relay_password"):
        problems.append(Problem(f"stack {pulumi.get_stack()}", _PLAINTEXT_RELAY_PASSWORD))
    try:
        settings = settings_from_values(values, source=f"stack {pulumi.get_stack()}")
    except InputError as exc:
        raise InputError(exc.subject, problems + exc.problems) from None
    if problems:
        raise InputError(f"stack settings stack {pulumi.get_stack()}", problems)
    return settings


_PLAINTEXT_RELAY_PASSWORD = (
    f"{NAMESPACE}:relay_password is stored in plain text; "
    f"store it as a secret: pulumi config set --secret {NAMESPACE}:relay_password"
)


@dataclass(frozen=True)
class StackFile:
    """A stack's settings as read from ``stacks/Pulumi.<env>.yaml``."""

    env: str
    path: Path
    project_dir: Path
    settings: Settings
    region: str | None
    has_relay_password: bool

    def resolve(self, relative: str) -> Path:
        """A path from the settings (such as the roster), relative to the project."""
        return (self.project_dir / relative).resolve()


def find_project_dir(start: Path | None = None) -> Path:
    """The directory holding Pulumi.yaml, from ``start`` (default: cwd) upwards."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "Pulumi.yaml").is_file():
            return candidate
    raise InputError("project", [Problem(str(here), "no Pulumi.yaml here or above: run from the mailstack project")])


def load_stack_file(env: str, project_dir: Path | None = None) -> StackFile:
    """Read and validate ``stacks/Pulumi.<env>.yaml`` of the project."""
    project_dir = project_dir or find_project_dir()
    path = project_dir / "stacks" / f"Pulumi.{env}.yaml"
    shown = str(path.relative_to(project_dir)) if path.is_relative_to(project_dir) else str(path)
    if not path.is_file():
        known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in (project_dir / "stacks").glob("Pulumi.*.yaml"))
        raise InputError(f"stack {env}", [Problem(shown, f"no such stack file; known stacks: {', '.join(known) or 'none'}")])
    text = path.read_text(encoding="utf-8")
    try:
        document = yaml.safe_load(text) or {}
        lines = _key_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{shown}:{mark.line + 1}" if mark else shown
        raise InputError(f"stack settings {shown}", [Problem(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise InputError(f"stack settings {shown}", [Problem(shown, "no 'config:' mapping in the stack file")])
    values = {k.split(":", 1)[1]: v for k, v in config.items() if isinstance(k, str) and k.startswith(NAMESPACE + ":")}
    relay_password = values.get("relay_password")
    problems = []
    if relay_password is not None and not (isinstance(relay_password, dict) and "secure" in relay_password):
        problems.append(Problem(f"{shown}:{lines.get('relay_password', '?')}", _PLAINTEXT_RELAY_PASSWORD))
    try:
        settings = settings_from_values(values, source=shown, lines=lines)
    except InputError as exc:
        raise InputError(exc.subject, problems + exc.problems) from None
    if problems:
        raise InputError(f"stack settings {shown}", problems)
    region = config.get("aws:region")
    return StackFile(env, path, project_dir, settings, region, relay_password is not None)


def _key_lines(text: str) -> dict[str, int]:
    """Map ``key.sub.key`` of the ``mailstack:`` config to 1-based line numbers."""
    root = yaml.compose(text)
    lines: dict[str, int] = {}
    if not isinstance(root, yaml.MappingNode):
        return lines
    config = next((v for k, v in root.value if k.value == "config"), None)
    if not isinstance(config, yaml.MappingNode):
        return lines

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = f"{prefix}.{key.value}" if prefix else str(key.value)
                lines[path] = key.start_mark.line + 1
                walk(value, path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                path = f"{prefix}.{index}"
                lines[path] = item.start_mark.line + 1
                walk(item, path)

    for key, value in config.value:
        if isinstance(key.value, str) and key.value.startswith(NAMESPACE + ":"):
            name = key.value.split(":", 1)[1]
            lines[name] = key.start_mark.line + 1
            walk(value, name)
    return lines
