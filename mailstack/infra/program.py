"""The Pulumi program: settings and roster in, the new mail host out."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from mailstack import hostfiles, lifecycle, records
from mailstack.firewall import ingress_rules
from mailstack.infra.bundle import BUNDLE_KEY, ConfigBundle
from mailstack.infra.dns import MailDns
from mailstack.infra.host import MailHost
from mailstack.infra.network import MailFirewall
from mailstack.infra.policies import host_policy
from mailstack.infra.storage import MailVolume
from mailstack.problems import InputError, Problem
from mailstack.roster import Roster, load_roster
from mailstack.settings import NAMESPACE, Settings, settings_from_pulumi


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
    return settings, roster, relay_password


def _placement(settings: Settings) -> tuple[pulumi.Output[str], pulumi.Output[str], pulumi.Output[str]]:
    """VPC, subnet and availability zone of the host."""
    if settings.host.subnet_id:
        subnet = aws.ec2.get_subnet_output(id=settings.host.subnet_id)
    else:
        zone = settings.host.availability_zone or aws.get_availability_zones_output(state="available").names[0]
        vpc = aws.ec2.get_vpc_output(default=True)
        subnet = aws.ec2.get_subnet_output(vpc_id=vpc.id, availability_zone=zone, default_for_az=True)
    return subnet.vpc_id, subnet.id, subnet.availability_zone


def build(settings: Settings, roster: Roster, *, stack: str, relay_password: pulumi.Output[str] | None = None) -> dict:
    """Declare every resource of the stack and return its outputs."""
    name = f"mailstack-{stack}"
    vpc_id, subnet_id, availability_zone = _placement(settings)
    region = aws.get_region_output().region
    zone_id = aws.route53.get_zone_output(name=settings.zone, private_zone=False).zone_id

    seed = random.RandomPassword(f"{name}-password-seed", length=48, special=False)
    parameters = []
    if relay_password is not None:
        parameters.append(aws.ssm.Parameter(
            f"{name}-relay-password", name=f"/{name}/relay-password", type="SecureString", value=relay_password,
        ))
    volume = MailVolume(f"{name}-mail", settings=settings, availability_zone=availability_zone)

    def files(seed_value: str, volume_id: str, parameter_name: str | None) -> str:
        return hostfiles.bundle_document(hostfiles.render_host_files(
            settings, roster, password_seed=seed_value, mail_volume_id=volume_id,
            relay_password_parameter=parameter_name,
        ))

    document = pulumi.Output.all(
        seed.result, volume.id, parameters[0].name if parameters else None,
    ).apply(lambda args: files(*args))
    bundle = ConfigBundle(f"{name}-bundle", document=document)
    firewall = MailFirewall(f"{name}-host", vpc_id=vpc_id, rules=ingress_rules(settings))
    policy = pulumi.Output.all(bundle.object_arn, zone_id, *[p.arn for p in parameters]).apply(
        lambda args: host_policy(bundle_object_arn=args[0], zone_id=args[1], host_name=settings.host.name,
                                 parameter_arns=list(args[2:]))
    )
    user_data = pulumi.Output.all(bundle.bucket.id, region).apply(
        lambda args: hostfiles.user_data(settings, bucket=args[0], key=BUNDLE_KEY, region=args[1])
    )
    host = MailHost(f"{name}-host", settings=settings, subnet_id=subnet_id, security_group_id=firewall.id,
                    user_data=user_data, policy=policy)
    volume.attach(host.instance.id)
    dns = MailDns(f"{name}-dns", zone_id=zone_id, records=records.host_records(settings, host.public_ip),
                  host_name=settings.host.name, allocation_id=host.eip.allocation_id)

    planned = host.public_ip.apply(
        lambda ip: [r.as_dict() for r in records.host_records(settings, ip) + records.mail_records(settings)]
    )
    return {
        "phase": settings.phase,
        "host_name": settings.host.name,
        "host_ip": host.public_ip,
        "instance_id": host.instance.id,
        "mail_volume_id": volume.id,
        "bundle_bucket": bundle.bucket.id,
        "bundle_version": pulumi.Output.unsecret(document.apply(hostfiles.bundle_version)),
        "mailboxes": len(roster),
        "dns_records": planned,
        "reverse_dns": dns.reverse.domain_name,
        "next_step": lifecycle.next_step(settings, stack),
    }


def run(project_dir: Path | None = None) -> dict:
    """Entry point of ``__main__.py``: validate everything, then declare and export.

    Bad input stops the program with one message per problem before any
    resource is declared.
    """
    try:
        settings, roster, relay_password = load_inputs(project_dir or Path.cwd())
    except InputError as exc:
        for problem in exc.problems:
            pulumi.log.error(str(problem))
        raise pulumi.RunError(f"{exc.subject}: {len(exc.problems)} problem(s) above; nothing was changed") from None
    outputs = build(settings, roster, stack=pulumi.get_stack(), relay_password=relay_password)
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs
