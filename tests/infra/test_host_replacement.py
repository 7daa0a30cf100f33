"""Replacing the mail host never strands mail: refused unless acknowledged, the volume detached first, the zone kept."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pulumi
import pytest

from mailstack.infra.offline import Account, Evaluation, default_subnet_id, evaluate
from mailstack.infra.placement import MailVolumeFound, RunningHost, choose_zone, replacing_changes
from tests.conftest import PROJECT, pulumi_config, stack_values

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
RUNNING_AMI = "ami-0aaaaaaaaaaaaaaaa"
NEWER_AMI = "ami-0bbbbbbbbbbbbbbbb"
HOST_TAGS = {"Name": "mail.example.com", "mailstack:stack": "mailstack-test"}
VOLUME_TAGS = {"mailstack:snapshot": "mailstack-test-mail"}
ZONES = "aws:index/getAvailabilityZones:getAvailabilityZones"


def account(*, zone: str = "eu-west-1a", tags: dict | None = None, subnets: dict | None = None) -> Account:
    """An account where the stack's host runs on RUNNING_AMI in ``zone``'s default subnet, its mail volume beside it."""
    host = {"ami": RUNNING_AMI, "subnetId": default_subnet_id(zone), "availabilityZone": zone,
            "tags": HOST_TAGS if tags is None else tags, "state": "running"}
    return Account(instances={"i-0running00000000a": host},
                   volumes={"vol-0mail000000000a": {"availabilityZone": zone, "tags": VOLUME_TAGS}},
                   subnets=subnets or {})


def run(roster, *, existing: Account | None = None, lookups=None, **host) -> Evaluation:
    values = stack_values(roster)
    values["host"] = {**values["host"], **host}
    return evaluate(pulumi_config(values), project_dir=PROJECT, stack="test", account=existing, lookups=lookups,
                    now=NOW)


def host_instance(evaluation: Evaluation):
    (instance,) = [r for r in evaluation.of_type("aws:ec2/instance:Instance") if r.name == "mailstack-test-host"]
    return instance


# ------------------------------------------------------------ options


def test_mail_volume_attachment_is_deleted_before_its_replacement_is_created(roster_file):
    attachment = run(roster_file).one("aws:ec2/volumeAttachment:VolumeAttachment")
    assert attachment.options["delete_before_replace"] is True
    assert attachment.inputs["stopInstanceBeforeDetaching"] is True


def test_host_is_protected_and_its_state_always_allows_deleting_it(roster_file):
    """force_destroy must be in the state before the update that deletes the termination-protected host."""
    instance = host_instance(run(roster_file, existing=account()))
    assert instance.options["protect"] is True
    assert instance.inputs["disableApiTermination"] is True and instance.inputs["forceDestroy"] is True
    assert instance.inputs["tags"] == HOST_TAGS


# ------------------------------------------------- refused at preview


def test_pinned_ami_other_than_the_running_hosts_is_refused_before_any_resource(roster_file, caplog, declared_types):
    with pytest.raises(pulumi.RunError, match="nothing was changed"):
        run(roster_file, existing=account(), ami=NEWER_AMI)
    assert declared_types == []
    assert f"i-0running00000000a: AMI {RUNNING_AMI} -> {NEWER_AMI} (host.ami)" in caplog.text
    assert 'README "Replacing the host" (stop mail, final snapshot, swap)' in caplog.text
    assert "mailstack:host.replace" in caplog.text


def test_pinning_the_running_hosts_own_ami_replaces_nothing(roster_file):
    instance = host_instance(run(roster_file, existing=account(), ami=RUNNING_AMI))
    assert instance.options["protect"] is True and instance.inputs["ami"] == RUNNING_AMI


def test_subnet_change_is_refused_naming_both_subnets(roster_file, caplog, declared_types):
    other = "subnet-0123456789abcdef0"
    with pytest.raises(pulumi.RunError):
        run(roster_file, existing=account(subnets={other: "eu-west-1a"}), subnet_id=other)
    assert declared_types == []
    assert f"subnet {default_subnet_id('eu-west-1a')} -> {other} (host.subnet_id)" in caplog.text


def test_subnet_in_another_zone_than_the_mail_volume_is_refused(roster_file, caplog):
    other = "subnet-0123456789abcdef0"
    with pytest.raises(pulumi.RunError):
        run(roster_file, existing=account(subnets={other: "eu-west-1b"}), subnet_id=other)
    assert "mail volume vol-0mail000000000a (eu-west-1a) is in another zone" in caplog.text
    assert "mailstack:host.subnet_id" in caplog.text


# ------------------------------------------- carried out when acknowledged


def test_acknowledged_replacement_unprotects_the_host_for_that_update(roster_file, caplog):
    evaluation = run(roster_file, existing=account(), ami=NEWER_AMI, replace="2026-12-06 newer Debian image")
    instance = host_instance(evaluation)
    assert instance.options["protect"] is False and instance.inputs["forceDestroy"] is True
    assert instance.inputs["ami"] == NEWER_AMI
    assert evaluation.one("aws:ec2/volumeAttachment:VolumeAttachment").options["delete_before_replace"] is True
    assert evaluation.one("aws:ebs/volume:Volume").options["protect"] is True  # the mail itself stays protected
    assert "remove mailstack:host.replace once it is done" in caplog.text


def test_stale_acknowledgement_allows_no_replacement(roster_file, caplog):
    with pytest.raises(pulumi.RunError):
        run(roster_file, existing=account(), ami=NEWER_AMI, replace="2026-11-20 newer Debian image")
    assert "is dated 2026-11-20, not within 2 days of today (2026-12-06)" in caplog.text


def test_stale_acknowledgement_without_a_change_keeps_the_host_protected(roster_file):
    instance = host_instance(run(roster_file, existing=account(), replace="2026-11-20 newer Debian image"))
    assert instance.options["protect"] is True


def test_host_of_an_earlier_version_is_not_replaced_before_its_state_allows_deleting_it(roster_file, caplog):
    earlier = account(tags={"Name": "mail.example.com"})
    with pytest.raises(pulumi.RunError):
        run(roster_file, existing=earlier, ami=NEWER_AMI, replace="2026-12-06 newer Debian image")
    assert "made by an earlier mailstack version" in caplog.text
    assert "run pulumi up once without the replacing change" in caplog.text


def test_replace_setting_without_a_date_is_refused(roster_file, caplog):
    with pytest.raises(pulumi.RunError, match="1 problem"):
        run(roster_file, replace="now please")
    assert "mailstack:host.replace" in caplog.text and "YYYY-MM-DD reason" in caplog.text


# -------------------------------------------------- the zone, chosen once


def test_mail_volumes_zone_is_kept_when_the_region_stops_listing_it(roster_file):
    """During an AZ incident the zone may leave the available list: the host and volume stay, nothing replaced."""
    incident = {ZONES: {"names": ["eu-west-1b", "eu-west-1c"], "zoneIds": ["euw1-az2", "euw1-az3"]}}
    evaluation = run(roster_file, existing=account(zone="eu-west-1a"), lookups=incident, ami=RUNNING_AMI)
    assert evaluation.one("aws:ebs/volume:Volume").inputs["availabilityZone"] == "eu-west-1a"
    instance = host_instance(evaluation)
    assert instance.inputs["subnetId"] == default_subnet_id("eu-west-1a") and instance.options["protect"] is True
    assert evaluation.outputs["availability_zone"] == "eu-west-1a"
    assert ZONES not in [token for token, _ in evaluation.calls]  # never asked: nothing to choose


def test_first_deploy_chooses_a_zone_and_says_to_pin_it(roster_file):
    evaluation = run(roster_file, lookups={ZONES: {"names": ["eu-west-1c", "eu-west-1b"], "zoneIds": ["x", "y"]}})
    assert evaluation.one("aws:ebs/volume:Volume").inputs["availabilityZone"] == "eu-west-1b"
    assert evaluation.outputs["availability_zone"] == (
        "eu-west-1b (chosen on this first deploy: set mailstack:host.availability_zone to eu-west-1b)")


def test_pinned_zone_other_than_the_mail_volumes_is_refused(roster_file, caplog, declared_types):
    with pytest.raises(pulumi.RunError):
        run(roster_file, existing=account(zone="eu-west-1a"), availability_zone="eu-west-1b")
    assert declared_types == []
    assert "mailstack:host.availability_zone: eu-west-1b, but the mail volume vol-0mail000000000a (eu-west-1a)" in caplog.text


# ------------------------------------------------------ the pure decisions


def test_volumes_in_two_zones_need_the_zone_pinned():
    volumes = [MailVolumeFound("vol-a", "eu-west-1a"), MailVolumeFound("vol-b", "eu-west-1b")]
    zone, problems = choose_zone(pinned=None, subnet=None, volumes=volumes, first_available="eu-west-1a")
    assert zone is None and "different zones" in problems[0].message
    zone, problems = choose_zone(pinned="eu-west-1b", subnet=None, volumes=volumes, first_available=None)
    assert zone.name == "eu-west-1b" and problems == []


def test_subnet_and_pinned_zone_must_agree():
    zone, problems = choose_zone(pinned="eu-west-1a", subnet=("subnet-1", "eu-west-1b"), volumes=[], first_available=None)
    assert zone is None and problems[0].where == "mailstack:host.availability_zone"


def test_unpinned_ami_never_counts_as_a_replacement():
    host = RunningHost("i-1", RUNNING_AMI, "subnet-1", "eu-west-1a", True)
    assert replacing_changes(ami=None, subnet_id="subnet-1", zone="eu-west-1a", running=[host]) == []
    assert replacing_changes(ami=NEWER_AMI, subnet_id="subnet-1", zone="eu-west-1a", running=[]) == []


def test_an_interrupted_replacement_whose_new_host_matches_is_not_a_change():
    old = RunningHost("i-old", RUNNING_AMI, "subnet-1", "eu-west-1a", True)
    new = RunningHost("i-new", NEWER_AMI, "subnet-1", "eu-west-1a", True)
    assert replacing_changes(ami=NEWER_AMI, subnet_id="subnet-1", zone="eu-west-1a", running=[old, new]) == []
    assert replacing_changes(ami=RUNNING_AMI, subnet_id="subnet-2", zone="eu-west-1a", running=[old]) == [
        "i-old: subnet subnet-1 -> subnet-2 (host.subnet_id)"]


def test_fresh_acknowledgement_without_a_setting_change_allows_a_forced_replacement(roster_file):
    """`pulumi up --replace` of the instance (to re-run a first boot) needs the host unprotected too."""
    instance = host_instance(run(roster_file, existing=account(), replace="2026-12-05 re-run the first boot"))
    assert instance.options["protect"] is False


def test_a_region_listing_no_zone_on_a_first_deploy_is_a_clear_problem():
    zone, problems = choose_zone(pinned=None, subnet=None, volumes=[], first_available=None)
    assert zone is None and problems[0].message == "the region lists no available zone: set it explicitly"
