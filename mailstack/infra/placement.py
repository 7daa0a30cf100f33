"""Where the host and its mail volume live, and whether an update would replace the host.

Read before any resource is declared: what AWS runs now (the host instance,
found by its tags, and the mail volume) against what the settings ask for.
The decisions are pure functions; the lookups are thin shells around them.

- The availability zone is chosen once. An existing mail volume's zone wins
  (a volume cannot move between zones), ``host.availability_zone`` pins it,
  and only a first deploy picks one (the region's first available zone, shown
  in the ``availability_zone`` output to be pinned). A zone that stops being
  listed as available during an AWS incident therefore never moves the host.
- A change that replaces the host (a pinned AMI, a subnet or a zone other
  than the running host's) is refused before anything is declared, unless
  ``host.replace`` acknowledges it; the README's "Replacing the host" gives
  the procedure (stop mail, final snapshot, swap).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pulumi_aws as aws

from mailstack.infra.storage import SNAPSHOT_TAG as VOLUME_TAG  # the mail volume's tag, valued with its name
from mailstack.problems import InputError, Problem
from mailstack.stack.settings import NAMESPACE, Settings

LIVE_STATES = ["pending", "running", "stopping", "stopped"]
"""Instance states of a host that exists (a terminated or terminating one is gone)."""
STACK_TAG = "mailstack:stack"
"""Tag of the host instance naming its stack: set by the same update that records ``force_destroy``."""
REPLACE_VALID_FOR = timedelta(days=2)
PROCEDURE = 'README "Replacing the host"'


@dataclass(frozen=True)
class RunningHost:
    """The host instance AWS runs now, as a lookup found it."""

    instance_id: str
    ami: str
    subnet_id: str
    availability_zone: str
    stack_tagged: bool  # made or updated by this version (so force_destroy is in Pulumi's state)


@dataclass(frozen=True)
class MailVolumeFound:
    """A mail volume of this stack that exists in the account."""

    volume_id: str
    availability_zone: str


@dataclass(frozen=True)
class Zone:
    """The availability zone of the host and its volume, and why it is that one."""

    name: str
    source: str
    first_deploy: bool = False


@dataclass(frozen=True)
class Placement:
    """Where the host goes, and whether this update may replace it."""

    vpc_id: str
    subnet_id: str
    zone: Zone
    replacing: tuple[str, ...] = ()  # what replaces the host in this update (acknowledged by host.replace)

    @property
    def protect(self) -> bool:
        """The host stays protected unless this update replaces it on purpose."""
        return not self.replacing


# ------------------------------------------------------------ pure decisions


def choose_zone(*, pinned: str | None, subnet: tuple[str, str] | None, volumes: list[MailVolumeFound],
                first_available: str | None) -> tuple[Zone | None, list[Problem]]:
    """The zone of the host and its volume: (zone, problems). ``subnet`` is (id, zone) when one is set."""
    key = f"{NAMESPACE}:host"
    zones = sorted({v.availability_zone for v in volumes})
    listed = ", ".join(f"{v.volume_id} ({v.availability_zone})" for v in volumes)
    if subnet and pinned and subnet[1] != pinned:
        return None, [Problem(f"{key}.availability_zone", f"{pinned}, but host.subnet_id {subnet[0]} is in {subnet[1]}: "
                                                          "give one zone (or leave availability_zone unset)")]
    wanted = pinned or (subnet[1] if subnet else None)
    if wanted:
        if zones and wanted not in zones:
            where = f"{key}.availability_zone" if pinned else f"{key}.subnet_id"
            return None, [Problem(where, f"{wanted}, but the mail volume {listed} is in another zone, and a volume "
                                         f"cannot move between zones: choose {' or '.join(zones)}")]
        source = "host.availability_zone" if pinned else f"the zone of host.subnet_id {subnet[0]}"
        return Zone(wanted, source), []
    if len(zones) > 1:
        return None, [Problem(f"{key}.availability_zone", f"mail volumes {listed} carry this stack's tag in different "
                                                          "zones: set it to the zone of the volume in use "
                                                          "(the mail_volume_id output)")]
    if zones:
        return Zone(zones[0], f"the zone of the existing mail volume {volumes[0].volume_id}"), []
    if not first_available:
        return None, [Problem(f"{key}.availability_zone", "the region lists no available zone: set it explicitly")]
    return Zone(first_available, "the region's first available zone, chosen on this first deploy", first_deploy=True), []


def replacing_changes(*, ami: str | None, subnet_id: str, zone: str, running: list[RunningHost]) -> list[str]:
    """What in this update replaces the running host (empty when nothing does, or no host runs yet).

    Only a pinned ``ami`` is compared: unpinned, Pulumi ignores the image. With
    several instances carrying the host's tags (an interrupted replacement),
    one that already matches means the change was made.
    """
    found = []
    for host in running:
        changes = []
        if ami and ami != host.ami:
            changes.append(f"AMI {host.ami} -> {ami} (host.ami)")
        if subnet_id != host.subnet_id:
            changes.append(f"subnet {host.subnet_id} -> {subnet_id} (host.subnet_id)")
        if zone != host.availability_zone:
            changes.append(f"availability zone {host.availability_zone} -> {zone} (host.availability_zone)")
        if not changes:
            return []
        found.append((host, changes))
    return [f"{host.instance_id}: {change}" for host, changes in found[:1] for change in changes]


def replace_acknowledged(settings: Settings, today: date) -> bool:
    """True when ``host.replace`` is set and dated within the last two days (a stale one allows nothing)."""
    acknowledged = settings.host.replace_date
    return acknowledged is not None and today - REPLACE_VALID_FOR <= acknowledged <= today + timedelta(days=1)


def replacement_problems(settings: Settings, changes: list[str], running: list[RunningHost],
                         today: date) -> list[Problem]:
    """Why this replacing update is refused (empty: allowed, or nothing replaces the host)."""
    if not changes:
        return []
    where = f"{NAMESPACE}:host"
    what = "; ".join(changes)
    acknowledged = settings.host.replace_date
    if acknowledged is None:
        return [Problem(where, f"this update would replace the mail host ({what}). Replacing it stops mail and moves "
                               f"the mail volume: follow {PROCEDURE} (stop mail, final snapshot, swap), setting "
                               f"{NAMESPACE}:host.replace to 'YYYY-MM-DD reason' to carry it out; or undo the change")]
    if not replace_acknowledged(settings, today):
        return [Problem(f"{where}.replace", f"{settings.host.replace!r} is dated {acknowledged}, not within "
                                            f"{REPLACE_VALID_FOR.days} days of today ({today}): this update would "
                                            f"replace the mail host ({what}); set today's date to carry out "
                                            f"{PROCEDURE}, or undo the change")]
    unrecorded = [h.instance_id for h in running if not h.stack_tagged]
    if unrecorded:
        return [Problem(f"{where}.replace", f"the host {', '.join(unrecorded)} was made by an earlier mailstack "
                                            "version: Pulumi's state does not yet allow deleting it "
                                            "(force_destroy); run pulumi up once without the replacing change, "
                                            "then again with it")]
    return []


# ------------------------------------------------------------------ lookups


def running_hosts(settings: Settings, stack_name: str) -> list[RunningHost]:
    """Instances that are this stack's host now, found by their Name tag (and the stack tag, when set)."""
    found = aws.ec2.get_instances(instance_tags={"Name": settings.host.name}, instance_state_names=LIVE_STATES)
    hosts = []
    for instance_id in sorted(found.ids):
        info = aws.ec2.get_instance(instance_id=instance_id)
        tags = dict(info.tags or {})
        if tags.get(STACK_TAG) not in (None, stack_name):
            continue  # another stack's host of the same name
        hosts.append(RunningHost(instance_id, info.ami, info.subnet_id, info.availability_zone,
                                 tags.get(STACK_TAG) == stack_name))
    return hosts


def mail_volumes(volume_name: str) -> list[MailVolumeFound]:
    """The stack's mail volumes that exist in the account, found by their tag."""
    found = aws.ebs.get_ebs_volumes(tags={VOLUME_TAG: volume_name})
    volumes = []
    for volume_id in sorted(found.ids):
        info = aws.ebs.get_volume(filters=[{"name": "volume-id", "values": [volume_id]}])
        volumes.append(MailVolumeFound(volume_id, info.availability_zone))
    return volumes


def resolve(settings: Settings, *, stack_name: str, volume_name: str, today: date) -> Placement:
    """Look up what runs now and decide where the host goes; raise InputError when the update is refused."""
    host = settings.host
    subnet = aws.ec2.get_subnet(id=host.subnet_id) if host.subnet_id else None
    volumes = mail_volumes(volume_name)
    first = None
    if not (host.availability_zone or subnet or volumes):
        names = sorted(aws.get_availability_zones(state="available").names or [])
        first = names[0] if names else None
    zone, problems = choose_zone(pinned=host.availability_zone,
                                 subnet=(subnet.id, subnet.availability_zone) if subnet else None,
                                 volumes=volumes, first_available=first)
    if problems:
        raise InputError(f"stack {stack_name}", problems)
    if subnet is None:
        vpc = aws.ec2.get_vpc(default=True)
        subnet = aws.ec2.get_subnet(vpc_id=vpc.id, availability_zone=zone.name, default_for_az=True)
    running = running_hosts(settings, stack_name)
    changes = replacing_changes(ami=host.ami, subnet_id=subnet.id, zone=zone.name, running=running)
    problems = replacement_problems(settings, changes, running, today)
    if problems:
        raise InputError(f"stack {stack_name}", problems)
    # Acknowledged: the host is unprotected for this update only (also for a `pulumi up --replace` of it).
    if not replace_acknowledged(settings, today):
        return Placement(subnet.vpc_id, subnet.id, zone)
    return Placement(subnet.vpc_id, subnet.id, zone, tuple(changes) or (f"host.replace: {host.replace}",))
