"""The staged lifecycle under Pulumi mocks: records per phase, gated transitions, rollback."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pulumi
import pytest

from mailstack.infra.offline import Evaluation, evaluate, reveal
from mailstack.host.records import SPF_LOOKUP_LIMIT, spf_lookups
from tests.conftest import RELAY, RELAYED, pulumi_config, stack_values, write_roster

IP = "203.0.113.25"
EIPS = {"aws:ec2/getEips:getEips": {"publicIps": [IP], "allocationIds": ["eipalloc-1"], "id": "x"}}


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "stacks" / "evidence").mkdir(parents=True)
    write_roster(tmp_path / "roster.csv", 3)
    return tmp_path


ROSTER = [f"user{n}@example.com" for n in range(3)]  # the project's roster


def write_evidence(project: Path, **parts) -> None:
    now = datetime.now(timezone.utc)
    synced = {"at": (now - timedelta(days=1)).isoformat(), "differences": 0, "in_sync": True}
    evidence = {
        "verification": {"at": (now - timedelta(hours=1)).isoformat(), "host_name": "mail.example.com", "host_ip": IP,
                         "certificate_sha256": "ab" * 32, "checks": ["all"], "mailboxes": ROSTER, "outbound": RELAYED},
        "previous_mx_ttl": 3600,
        "lowered_ttl_seen_at": (now - timedelta(hours=2)).isoformat(),
        "new_mx_first_seen_at": (now - timedelta(days=15)).isoformat(),
        "old_server_last_mail_at": (now - timedelta(days=5)).isoformat(),
        "final_sync": {"at": (now - timedelta(days=1)).isoformat(), "differences": 0},
        "synced": {address: synced for address in ROSTER},
        "old_server_checked": {address: {"at": (now - timedelta(hours=1)).isoformat()} for address in ROSTER},
        "backup_at": (now - timedelta(days=20)).isoformat(),
    }
    evidence.update(parts)
    (project / "stacks" / "evidence" / "test.json").write_text(json.dumps({k: v for k, v in evidence.items() if v is not None}))


def run(project: Path, phase: str, lookups=None, **overrides) -> Evaluation:
    config = pulumi_config(stack_values(project / "roster.csv", phase=phase, **{"relay": RELAY, **overrides}))
    return evaluate(config, project_dir=project, stack="test", lookups={**EIPS, **(lookups or {})})


def record_sets(evaluation: Evaluation) -> dict[str, dict]:
    return {r.name: reveal(r.inputs) for r in evaluation.of_type("aws:route53/record:Record")}


def mx(evaluation: Evaluation) -> tuple[list, int]:
    record = record_sets(evaluation)["example.com-MX"]
    return record["records"], record["ttl"]


# ------------------------------------------------------------ records per phase


def test_provision_keeps_mx_on_the_old_server_with_the_lowered_ttl(project):
    assert mx(run(project, "provision")) == (["10 mail.example.net."], 300)


def test_cutover_points_mx_at_the_new_host(project):
    write_evidence(project)
    assert mx(run(project, "cutover")) == (["10 mail.example.com."], 300)


def test_rollback_to_provision_restores_the_old_mx_even_without_evidence(project):
    write_evidence(project)
    run(project, "cutover")
    (project / "stacks" / "evidence" / "test.json").unlink()
    assert mx(run(project, "provision")) == (["10 mail.example.net."], 300)


def test_decommission_drops_the_old_server_from_spf_and_restores_ttls(project):
    write_evidence(project)
    sets = record_sets(run(project, "decommission"))
    assert sets["example.com-MX"]["records"] == ["10 mail.example.com."] and sets["example.com-MX"]["ttl"] == 3600
    assert sets["example.com-TXT"]["records"] == ["v=spf1 a:mail.example.com -all"]


def test_spf_authorises_both_hosts_until_decommission(project):
    assert record_sets(run(project, "provision"))["example.com-TXT"]["records"] == [
        "v=spf1 a:mail.example.com ip4:192.0.2.25 ~all"]


def test_mta_sts_is_testing_until_decommission_then_enforce(project):
    write_evidence(project)
    ids = {phase: record_sets(run(project, phase))["_mta-sts.example.com-TXT"]["records"][0]
           for phase in ("provision", "cutover", "decommission")}
    assert ids["provision"] == ids["cutover"] != ids["decommission"]
    planned = run(project, "decommission").outputs["dns_records"]
    assert any(r["name"] == "_mta-sts.example.com" and "enforce mode" in r["reason"] for r in planned)


def test_every_planned_record_has_a_reason_and_is_declared(project):
    evaluation = run(project, "provision")
    declared = {(r["name"], r["type"]) for r in record_sets(evaluation).values()}
    planned = evaluation.outputs["dns_records"]
    assert all(r["reason"] for r in planned)
    assert {(r["name"], r["type"]) for r in planned} == declared
    assert {("_submissions._tcp.example.com", "SRV"), ("_imaps._tcp.example.com", "SRV"), ("_pop3s._tcp.example.com", "SRV"),
            ("_submission._tcp.example.com", "SRV"), ("_dmarc.example.com", "TXT"), ("_smtp._tls.example.com", "TXT"),
            ("mail.example.com", "CAA"), ("autoconfig.example.com", "CNAME"), ("autodiscover.example.com", "CNAME")} <= declared


def test_spf_stays_under_the_lookup_limit_with_a_relay(project):
    relay = {"host": "email-smtp.eu-west-1.amazonaws.com", "port": 587}
    spf = record_sets(run(project, "provision", relay=relay, old_server={"host": "mail.example.net",
                                                                          "imap": "imaps://mail.example.net"}))
    value = spf["example.com-TXT"]["records"][0]
    assert value == "v=spf1 a:mail.example.com a:mail.example.net include:amazonses.com ~all"
    assert spf_lookups(value) == 3 < SPF_LOOKUP_LIMIT


def test_existing_txt_values_the_stack_does_not_own_are_kept(project):
    existing = {"aws:route53/getRecords:getRecords": {"id": "x", "zoneId": "Z", "resourceRecordSets": [
        {"name": "example.com.", "type": "TXT", "ttl": 300, "resourceRecords": [
            {"value": '"google-site-verification=abc123"'}, {"value": '"v=spf1 include:_spf.oldhost.example -all"'}]},
    ]}}
    values = record_sets(run(project, "provision", lookups=existing))["example.com-TXT"]["records"]
    # The zone's SPF is merged (its include and its stricter -all kept), never dropped.
    assert values == ["v=spf1 include:_spf.oldhost.example a:mail.example.com ip4:192.0.2.25 -all",
                      "google-site-verification=abc123"]


def test_a_phase_change_touches_only_the_records_it_changes(project):
    """What `pulumi preview` of provision -> cutover shows: the MX of each domain, nothing else."""
    write_evidence(project)
    before = {(r.type, r.name): reveal(r.inputs) for r in run(project, "provision").resources}
    after = {(r.type, r.name): reveal(r.inputs) for r in run(project, "cutover").resources}
    assert before.keys() == after.keys()
    changed = sorted(name for key, name in before if before[(key, name)] != after[(key, name)])
    assert changed == ["example.com-MX"]


# ------------------------------------------------------------------ refusals


def test_cutover_without_evidence_is_refused_before_any_resource(project, caplog):
    with pytest.raises(pulumi.RunError, match="Setting mailstack:phase back to provision is always allowed"):
        run(project, "cutover")
    assert "cutover refused: no verification evidence: run mailstack verify -s ENV --record" in caplog.text


def test_cutover_refusal_declares_nothing(project, declared_types):
    with pytest.raises(pulumi.RunError):
        run(project, "cutover")
    assert declared_types == []


def test_cutover_with_evidence_of_an_older_host_address_is_refused(project, caplog):
    write_evidence(project)
    with pytest.raises(pulumi.RunError):
        run(project, "cutover", lookups={"aws:ec2/getEips:getEips": {"publicIps": ["198.51.100.9"], "id": "x"}})
    assert f"the verification is of {IP}, not of the current host address 198.51.100.9" in caplog.text


def test_decommission_during_the_overlap_is_refused(project, caplog):
    write_evidence(project, new_mx_first_seen_at=(datetime.now(timezone.utc) - timedelta(days=3)).isoformat())
    with pytest.raises(pulumi.RunError, match="phase decommission is not allowed yet"):
        run(project, "decommission")
    assert "the overlap period (14 days, mailstack:overlap_days) has 10 days" in caplog.text


def test_a_broken_evidence_file_is_a_clear_error(project, caplog):
    (project / "stacks" / "evidence" / "test.json").write_text("{not json")
    with pytest.raises(pulumi.RunError, match="nothing was changed"):
        run(project, "provision")
    assert "test.json: not a valid evidence file" in caplog.text


# ------------------------------------------------- the old server's records and instance

OLD_IN_ZONE = {"host": "old.example.com", "ip": "192.0.2.25", "imap": "imaps://old.example.com"}
OLD_EC2 = {**OLD_IN_ZONE, "instance_id": "i-0123456789abcdef0"}
SNAPSHOTS_DONE = {"aws:ebs/getSnapshotIds:getSnapshotIds": {"ids": ["snap-1", "snap-2"], "id": "x"}}


def test_old_server_name_is_kept_until_decommission_then_removed(project):
    write_evidence(project)
    assert record_sets(run(project, "cutover", old_server=OLD_IN_ZONE))["old.example.com-A"]["records"] == ["192.0.2.25"]
    assert "old.example.com-A" not in record_sets(run(project, "decommission", old_server=OLD_IN_ZONE))


def test_old_ec2_server_is_imported_protected_and_never_changed_before_decommission(project):
    evaluation = run(project, "provision", old_server=OLD_EC2)
    (old,) = [r for r in evaluation.of_type("aws:ec2/instance:Instance") if r.name.endswith("old-server")]
    assert old.options["import_id"] == "i-0123456789abcdef0" and old.options["protect"] is True
    assert {"ami", "instanceType", "userData", "vpcSecurityGroupIds", "tags"} <= set(old.options["ignore_changes"])
    assert old.inputs["ami"] == "ami-0aa0bb0cc0dd0ee0f"  # its own image, read from AWS: the import matches
    assert evaluation.of_type("aws:ebs/snapshot:Snapshot") == []
    assert evaluation.outputs["old_server"] == "adopted and protected; kept until decommission"


def test_decommission_snapshots_every_old_volume_before_planning_the_deletion(project):
    write_evidence(project)
    evaluation = run(project, "decommission", old_server=OLD_EC2)
    snapshots = evaluation.of_type("aws:ebs/snapshot:Snapshot")
    assert sorted(s.inputs["volumeId"] for s in snapshots) == ["vol-0old0000000000001", "vol-0old0000000000002"]
    assert all(s.options["retain_on_delete"] for s in snapshots)
    (old,) = [r for r in evaluation.of_type("aws:ec2/instance:Instance") if r.name.endswith("old-server")]
    assert old.options["protect"] is False
    assert len(old.options["depends_on"]) == 2  # the instance waits for its snapshots
    assert "run pulumi up again once they complete" in evaluation.outputs["old_server"]


def test_decommission_deletes_the_old_instance_only_once_its_snapshots_completed(project):
    write_evidence(project)
    evaluation = run(project, "decommission", old_server=OLD_EC2, lookups=SNAPSHOTS_DONE)
    assert [r.name for r in evaluation.of_type("aws:ec2/instance:Instance")] == ["mailstack-test-host"]
    assert len(evaluation.of_type("aws:ebs/snapshot:Snapshot")) == 2
    assert evaluation.outputs["old_server"] == "final snapshots completed; the instance is deleted by this update"


def test_rollback_keeps_the_old_instance_protected(project):
    write_evidence(project)
    run(project, "decommission", old_server=OLD_EC2)
    evaluation = run(project, "provision", old_server=OLD_EC2)
    (old,) = [r for r in evaluation.of_type("aws:ec2/instance:Instance") if r.name.endswith("old-server")]
    assert old.options["protect"] is True


def test_old_server_ignores_every_input_but_force_destroy(project):
    """Complete by construction: whatever the SDK's Instance takes, the adoption never changes it."""
    import pulumi_aws as aws

    evaluation = run(project, "provision", old_server=OLD_EC2)
    (old,) = [r for r in evaluation.of_type("aws:ec2/instance:Instance") if r.name.endswith("old-server")]
    every_input = {getattr(p.fget, "_pulumi_name", n) for n, p in vars(aws.ec2.InstanceArgs).items()
                   if isinstance(p, property)}
    assert set(old.options["ignore_changes"]) == every_input - {"forceDestroy"}
    assert {"launchTemplate", "ipv6Addresses", "instanceMarketOptions", "hostId", "getPasswordData"} <= every_input
    # Set from the first import, so the update that later deletes the termination-protected server can.
    assert old.inputs["forceDestroy"] is True


def test_final_snapshots_may_take_hours(project):
    write_evidence(project)
    snapshots = run(project, "decommission", old_server=OLD_EC2).of_type("aws:ebs/snapshot:Snapshot")
    assert snapshots and all(s.options["custom_timeouts"]["create"] == "6h" for s in snapshots)


@pytest.mark.parametrize("phase", ["provision", "decommission"])
def test_old_instance_that_no_longer_exists_is_already_torn_down(project, phase):
    from mailstack.infra.offline import Account

    write_evidence(project)
    config = pulumi_config(stack_values(project / "roster.csv", phase=phase, old_server=OLD_EC2))
    evaluation = evaluate(config, project_dir=project, stack="test", lookups=EIPS, account=Account(instances={}))
    assert [r.name for r in evaluation.of_type("aws:ec2/instance:Instance")] == ["mailstack-test-host"]
    assert evaluation.of_type("aws:ebs/snapshot:Snapshot") == []
    assert evaluation.outputs["old_server"] == "already torn down: the instance no longer exists"
    asked = [args for token, args in evaluation.calls if token == "aws:ec2/getInstances:getInstances"
             and args.get("filters")]
    assert asked[0]["filters"] == [{"name": "instance-id", "values": ["i-0123456789abcdef0"]}]


def test_terminated_old_instance_counts_as_torn_down(project):
    from mailstack.infra.offline import OLD_SERVER_STANDIN, Account

    terminated = Account(instances={"i-0123456789abcdef0": {**OLD_SERVER_STANDIN, "state": "terminated"}})
    config = pulumi_config(stack_values(project / "roster.csv", phase="provision", old_server=OLD_EC2))
    evaluation = evaluate(config, project_dir=project, stack="test", lookups=EIPS, account=terminated)
    assert evaluation.outputs["old_server"] == "already torn down: the instance no longer exists"


def test_preview_summary_shows_the_new_host_beside_an_adopted_old_server(project):
    from mailstack.infra.preview import summary

    report = summary(run(project, "provision", old_server=OLD_EC2))
    instances = [r for r in report["resources"] if r["type"] == "ec2.Instance"]
    assert {r["name"] for r in instances} == {"mailstack-test-host", "mailstack-test-old-server"}
    (host,) = [r for r in instances if r["name"] == "mailstack-test-host"]
    assert "protect=True" in host["detail"]
    assert report["facts"]["user_data_bytes"] > 0
    (attachment,) = [r for r in report["resources"] if r["type"] == "ec2.VolumeAttachment"]
    assert "delete before replace=True" in attachment["detail"]
