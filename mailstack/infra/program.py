"""The Pulumi program: settings and roster in, the new mail host out."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_random as random
import pulumi_tls as tls

from mailstack.host import files as hostfiles, records
from mailstack.migration import lifecycle
from mailstack.host.firewall import ingress_rules
from mailstack.infra.bundle import BUNDLE_KEY, ConfigBundle
from mailstack.infra.dns import MailDns
from mailstack.infra import placement as placing
from mailstack.infra.host import MailHost
from mailstack.infra.keys import StackKey
from mailstack.infra.network import MailFirewall
from mailstack.infra.oldserver import OldMailServer
from mailstack.infra.placement import Placement
from mailstack.infra.outbound import SesSending
from mailstack.infra.policies import host_policy
from mailstack.infra.storage import MailVolume
from mailstack.migration.evidence import Evidence, evidence_path, load_evidence
from mailstack.problems import InputError, Problem
from mailstack.stack.passwords import SEED_LENGTH
from mailstack.stack.roster import Roster, load_roster
from mailstack.stack.settings import NAMESPACE, Settings, settings_from_pulumi


SECRET_OUTPUTS = ("password_seed",)
"""Outputs stored as Pulumi secrets: read them with ``pulumi stack output NAME --show-secrets``."""


def load_inputs(project_dir: Path) -> tuple[Settings, Roster, pulumi.Output[str] | None]:
    """Settings, roster and relay password of the running stack, all validated."""
    settings = settings_from_pulumi()
    roster = load_roster(project_dir / settings.roster, domains=settings.domains, default_quota=settings.default_quota)
    relay_password = pulumi.Config(NAMESPACE).get_secret("relay_password")
    if settings.relay and settings.relay.username and relay_password is None:
        raise InputError(f"stack {pulumi.get_stack()}", [Problem(
            f"{NAMESPACE}:relay.username",
            f"the relay user needs a password: pulumi config set --secret {NAMESPACE}:relay_password",
        )])
    if settings.ses and relay_password is not None:
        raise InputError(f"stack {pulumi.get_stack()}", [Problem(
            f"{NAMESPACE}:relay_password",
            f"the stack makes SES's SMTP password itself ({NAMESPACE}:ses): "
            f"pulumi config rm {NAMESPACE}:relay_password",
        )])
    return settings, roster, relay_password


def current_host_ip(settings: Settings) -> str | None:
    """The Elastic IP the host has from an earlier ``pulumi up``, if any (for the cutover gate)."""
    found = aws.ec2.get_eips(tags={"Name": settings.host.name})
    return found.public_ips[0] if found.public_ips else None


def _names_regex(names) -> str:
    """A ``name_regex`` matching exactly these names (Route53 returns them with a trailing dot)."""
    return "^(" + "|".join(re.escape(n) for n in sorted(set(names))) + ")\\.?$"


def _by_name_type(sets) -> dict[str, list[str]]:
    """Record sets read by ``get_records`` as ``name-type -> values`` (as :attr:`Record.key`; simple sets only)."""
    found: dict[str, list[str]] = {}
    for each in sets or []:
        if getattr(each, "set_identifier", None) or getattr(each, "alias_target", None):
            continue  # weighted, latency or alias sets: the stack declares none, and leaves them alone
        name = each.name.lower().rstrip(".")
        found.setdefault(f"{name}-{each.type}", []).extend(r.value for r in (each.resource_records or []))
    return found


def _existing_records(zone_id: pulumi.Output[str], names) -> pulumi.Output[dict[str, list[str]]]:
    """Every record set the zone serves now at the names the stack declares: the merge rules decide from them."""
    found = aws.route53.get_records_output(zone_id=zone_id, name_regex=_names_regex(names))
    return found.resource_record_sets.apply(_by_name_type)


def zone_refusals(settings: Settings) -> list[str]:
    """Why the zone's existing records refuse the phase (an SPF over the lookup limit once merged), read before
    any resource is declared. A DKIM key at the selector is compared once the stack's key is known (in build)."""
    zone_id = aws.route53.get_zone(name=settings.zone, private_zone=False).zone_id
    shapes = records.desired_records(settings, ip="", dkim=None)
    found = aws.route53.get_records(zone_id=zone_id, name_regex=_names_regex(r.name for r in shapes))
    return records.decide_all(settings, shapes, _by_name_type(found.resource_record_sets))[1]


def _decisions(settings: Settings, by_key: dict, existing: dict) -> dict[str, records.Decision]:
    decided = {key: records.decide(settings, record, existing.get(key, ()))
               for key, record in by_key.items()}
    problems = [d.problem for d in decided.values() if d.problem]
    if problems:
        for problem in problems:
            pulumi.log.error(problem)
        raise pulumi.RunError(f"{len(problems)} record set(s) of the zone refuse this phase (above); "
                              "no DNS record was changed")
    return decided


def stack_name(stack: str) -> str:
    """The prefix of every resource name of the stack."""
    return f"mailstack-{stack}"


def placement_of(settings: Settings, stack: str, today: date) -> Placement:
    """Where the host and its volume live, read before any resource is declared (InputError when refused)."""
    name = stack_name(stack)
    return placing.resolve(settings, stack_name=name, volume_name=f"{name}-mail", today=today)


def build(settings: Settings, roster: Roster, *, stack: str, placement: Placement,
          relay_password: pulumi.Output[str] | None = None, evidence: Evidence | None = None) -> dict:
    """Declare every resource of the stack and return its outputs."""
    name = stack_name(stack)
    region = aws.get_region_output().region
    zone_id = aws.route53.get_zone_output(name=settings.zone, private_zone=False).zone_id

    seed = random.RandomPassword(f"{name}-password-seed", length=SEED_LENGTH, special=False)
    dkim_key = tls.PrivateKey(f"{name}-dkim", algorithm="RSA", rsa_bits=2048)
    dkim = records.Dkim(settings.dns.dkim_selector, dkim_key.public_key_pem.apply(records.dkim_value))
    # The role first: the stack key's policy names it, and its own policy names the key.
    host = MailHost(f"{name}-host", settings=settings)
    key = StackKey(f"{name}-key", host_role_arn=host.role.arn, region=region)
    # SES: the stack makes the SMTP user; its password goes where any relay's password goes (the SSM parameter).
    # A region of its own only when it differs from the stack's: naming the same region keeps the same provider.
    ses = (SesSending(f"{name}-ses", domains=settings.domains, zone_id=zone_id, ttl=settings.normal_ttl,
                      region=settings.ses.region if settings.ses.region != pulumi.Config("aws").get("region") else None)
           if settings.ses else None)
    relay_password = ses.smtp_password if ses else relay_password
    parameters = []
    if relay_password is not None:
        parameters.append(aws.ssm.Parameter(
            f"{name}-relay-password", name=f"/{name}/relay-password", type="SecureString", value=relay_password,
            key_id=key.arn,
        ))
    volume = MailVolume(f"{name}-mail", settings=settings, availability_zone=placement.zone.name)

    def files(seed_value: str, volume_id: str, dkim_pem: str, parameter_name: str | None,
              region_name: str, ses_user: str | None) -> str:
        return hostfiles.bundle_document(hostfiles.render_host_files(
            settings, roster, password_seed=seed_value, mail_volume_id=volume_id,
            relay_password_parameter=parameter_name, dkim_private_key=dkim_pem,
            relay=settings.ses.relay(region_name, ses_user) if ses else None,
        ))

    document = pulumi.Output.all(
        seed.result, volume.id, dkim_key.private_key_pem, parameters[0].name if parameters else None,
        region, ses.smtp_user if ses else None,
    ).apply(lambda args: files(*args))
    bundle = ConfigBundle(f"{name}-bundle", document=document, kms_key_arn=key.arn)
    firewall = MailFirewall(f"{name}-host", vpc_id=placement.vpc_id, rules=ingress_rules(settings))
    host.allow(pulumi.Output.all(bundle.object_arn, zone_id, key.arn, region, *[p.arn for p in parameters]).apply(
        lambda args: host_policy(bundle_object_arn=args[0], zone_id=args[1], key_arn=args[2], region=args[3],
                                 certificate_names=records.certificate_names(settings), parameter_arns=list(args[4:]))
    ))
    user_data = pulumi.Output.all(bundle.bucket.id, region).apply(
        lambda args: hostfiles.user_data(settings, bucket=args[0], key=BUNDLE_KEY, region=args[1])
    )
    host.launch(stack_name=name, subnet_id=placement.subnet_id, security_group_id=firewall.id, user_data=user_data,
                protect=placement.protect)
    if placement.replacing:
        pulumi.log.warn(f"host.replace: this update replaces the mail host ({'; '.join(placement.replacing)}); "
                        f"remove {NAMESPACE}:host.replace once it is done, so the host is protected again")
    volume.attach(host.instance.id)
    # The record sets are known now; the address and the key only once AWS and TLS have made them.
    resolved = pulumi.Output.all(host.public_ip, dkim.txt).apply(
        lambda args: {r.key: r for r in records.desired_records(settings, ip=args[0],
                                                                 dkim=records.Dkim(dkim.selector, args[1]))})
    shapes = records.desired_records(settings, ip="", dkim=records.Dkim(dkim.selector, ""))
    # What the zone serves now decides what each record set becomes (records.decide: merged, kept, refused).
    decided = pulumi.Output.all(resolved, _existing_records(zone_id, [r.name for r in shapes])).apply(
        lambda args: _decisions(settings, *args))
    declared = [(record,
                 decided.apply(lambda by_key, key=record.key: list(by_key[key].record.values)),
                 decided.apply(lambda by_key, key=record.key: by_key[key].overwrite)) for record in shapes]
    dns = MailDns(f"{name}-dns", zone_id=zone_id, records=declared,
                  host_name=settings.host.name, allocation_id=host.eip.allocation_id)

    old_server = None
    if settings.old_server.instance_id:
        old_server = OldMailServer(f"{name}-old-server", instance_id=settings.old_server.instance_id,
                                   phase=settings.phase)

    # Each record with its reason, and what each value the zone served there before became (kept, merged...).
    planned = decided.apply(lambda by_key: [
        {**d.record.as_dict(), "existing": [{"value": f.value, "becomes": f.becomes, "reason": f.reason}
                                            for f in d.fates if f.notable]} for d in by_key.values()])
    return {
        "phase": settings.phase,
        "host_name": settings.host.name,
        "host_ip": host.public_ip,
        "instance_id": host.instance.id,
        "mail_volume_id": volume.id,
        # Recorded once: pin it (host.availability_zone) so that no later update ever chooses again.
        "availability_zone": placement.zone.name if not placement.zone.first_deploy else
        f"{placement.zone.name} (chosen on this first deploy: set {NAMESPACE}:host.availability_zone to {placement.zone.name})",
        "kms_key_arn": key.arn,
        "bundle_bucket": bundle.bucket.id,
        "bundle_version": pulumi.Output.unsecret(document.apply(hostfiles.bundle_version)),
        "mailboxes": len(roster),
        "dns_records": planned,
        "reverse_dns": dns.reverse.domain_name,
        "dkim_selector": dkim.selector,
        "dkim_public_key": dkim_key.public_key_pem.apply(records.dkim_public_key),
        # A secret output, for `mailstack clients` to print generated initial passwords on the sheets.
        "password_seed": pulumi.Output.secret(seed.result),
        "next_step": lifecycle.next_step(settings, stack, evidence),
        "outbound": settings.outbound.summary if settings.outbound else lifecycle.NO_OUTBOUND,
        "old_server": old_server.status if old_server else f"{settings.old_server.host} is not in this AWS account",
    }


def run(project_dir: Path | None = None, now: datetime | None = None) -> dict:
    """Entry point of ``__main__.py``: validate everything, then declare and export.

    Bad input stops the program with one message per problem before any
    resource is declared.
    """
    project_dir = project_dir or Path.cwd()
    stack = pulumi.get_stack()
    try:
        settings, roster, relay_password = load_inputs(project_dir)
        evidence = load_evidence(evidence_path(project_dir, stack))
        placement = placement_of(settings, stack, (now or datetime.now(timezone.utc)).date())
    except InputError as exc:
        for problem in exc.problems:
            pulumi.log.error(str(problem))
        raise pulumi.RunError(f"{exc.subject}: {len(exc.problems)} problem(s) above; nothing was changed") from None
    host_ip = current_host_ip(settings) if settings.phase == "cutover" else None
    decision = lifecycle.phase_gate(settings, evidence, now or datetime.now(timezone.utc),
                                    host_name=settings.host.name, host_ip=host_ip,
                                    roster=[m.address for m in roster])
    if not decision.allowed:
        for reason in decision.reasons:
            pulumi.log.error(f"{decision.phase} refused: {reason}")
        raise pulumi.RunError(
            f"phase {decision.phase} is not allowed yet ({len(decision.reasons)} reason(s) above); nothing was changed. "
            "Setting mailstack:phase back to provision is always allowed."
        )
    refusals = zone_refusals(settings)
    if refusals:
        for problem in refusals:
            pulumi.log.error(problem)
        raise pulumi.RunError(f"the zone's records refuse phase {settings.phase} ({len(refusals)} problem(s) above); "
                              "nothing was changed")
    outputs = build(settings, roster, stack=stack, placement=placement, relay_password=relay_password,
                    evidence=evidence)
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs
