"""``mailstack plan`` against a Route53 zone served by moto in server mode (real HTTP through boto3, on loopback)."""

from __future__ import annotations

import json
import shutil
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
import yaml
from typer.testing import CliRunner

from mailstack.cli import app
from tests.conftest import PROJECT, RELAY, RELAYED, moto_server, route53_value, write_roster

pytestmark = pytest.mark.integration
ADDRESS = "127.0.13.1"  # this file's loopback address (inside 127.0.0.0/8, which lo carries: nothing to add)
ZONE = "example.com"
HOST = "mail.example.com"
OLD = "old.example.com"
runner = CliRunner()


@pytest.fixture(scope="module")
def endpoint():
    with moto_server(ADDRESS) as url:
        yield url


@pytest.fixture
def aws(endpoint, monkeypatch):
    """A fresh emulated account: one public zone (with moto's NS and SOA); clients through AWS_ENDPOINT_URL."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).close()
    for key, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "eu-west-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    route53 = boto3.client("route53", endpoint_url=endpoint, region_name="us-east-1")
    zone_id = route53.create_hosted_zone(Name=ZONE, CallerReference="plan-test")["HostedZone"]["Id"]
    return route53, zone_id


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project whose stack ``test`` has its old server inside the zone (so its A record is the stack's)."""
    project = tmp_path / "project"
    (project / "stacks" / "mailboxes").mkdir(parents=True)
    shutil.copy(PROJECT / "Pulumi.yaml", project)
    write_roster(project / "stacks" / "mailboxes" / "test.csv", 3)
    config = {
        "aws:region": "eu-west-1",
        "mailstack:phase": "provision",
        "mailstack:domains": [ZONE],
        "mailstack:zone": ZONE,
        "mailstack:host": {"name": HOST},
        "mailstack:old_server": {"host": OLD, "ip": "192.0.2.25", "imap": f"imaps://{OLD}:993"},
        "mailstack:roster": "stacks/mailboxes/test.csv",
        "mailstack:relay": RELAY,
    }
    (project / "stacks" / "Pulumi.test.yaml").write_text(yaml.safe_dump({"config": config}))
    monkeypatch.chdir(project)
    return project


def plan(*args: str):
    return runner.invoke(app, ["plan", "-s", "test", *args])


def plan_json(*args: str) -> dict:
    result = plan("--format", "json", *args)
    assert result.exit_code in (0, 2), result.output
    return json.loads(result.stdout)


def change(route53, zone_id: str, changes: list[tuple[str, str, str, int | None, list[str]]]) -> None:
    """Apply (action, name, type, ttl, values) changes in batches, as Pulumi would through the provider."""
    batch = []
    for action, name, rtype, ttl, values in changes:
        batch.append({"Action": action, "ResourceRecordSet": {
            "Name": name, "Type": rtype, "TTL": ttl,
            "ResourceRecords": [{"Value": route53_value(rtype, v)} for v in values]}})
    for start in range(0, len(batch), 1000):
        route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": batch[start:start + 1000]})


def apply(route53, zone_id: str, planned: dict) -> None:
    """Bring the zone to a plan's desired state (what ``pulumi up`` would do to the record sets)."""
    changes = []
    for c in planned["changes"]:
        if c["action"] == "delete":
            before = [v for v in c["before"]["served"]]
            changes.append(("DELETE", c["name"], c["type"], c["before"]["ttl"], [route53_txt_back(c["type"], v) for v in before]))
        else:
            changes.append(("UPSERT", c["name"], c["type"], c["after"]["ttl"], c["after"]["served"]))
    change(route53, zone_id, changes)


def route53_txt_back(rtype: str, served: str) -> str:
    """A served TXT value in the declared form ``change`` expects."""
    return served[1:-1].replace('" "', '""') if rtype == "TXT" else served


def kinds(planned: dict) -> list[str]:
    return [h["kind"] for h in planned["hazards"]]


def test_plan_of_an_empty_zone_creates_every_record_set_and_lists_ns_and_soa_as_not_the_stacks(aws, project):
    result = plan("--detailed-exitcode")
    assert result.exit_code == 2, result.output
    planned = plan_json()
    assert planned["counts"]["create"] == len(planned["changes"]) == 18
    assert {(c["name"], c["type"]) for c in planned["changes"]} >= {(ZONE, "MX"), (HOST, "A"), (OLD, "A")}
    assert [(f["name"], f["type"]) for f in planned["foreign"]] == [(ZONE, "NS"), (ZONE, "SOA")]
    assert "zone example.com read from Route53: 2 record sets" in planned["notes"]


def test_plan_of_a_zone_equal_to_the_desired_state_has_no_change_and_exits_0(aws, project):
    apply(*aws, plan_json())
    result = plan("--detailed-exitcode")
    assert result.exit_code == 0, result.output
    assert "0 to create, 0 to update, 0 to delete; 18 unchanged; 2 not the stack's (left alone)" in result.output
    assert "Hazards: none" in result.output


def test_records_the_stack_does_not_own_are_listed_and_left_alone(aws, project):
    route53, zone_id = aws
    apply(route53, zone_id, plan_json())
    change(route53, zone_id, [
        ("CREATE", f"www.{ZONE}", "A", 300, ["192.0.2.80"]),
        ("CREATE", f"_github-challenge.{ZONE}", "TXT", 300, ["4a1b2c"]),
        ("CREATE", f"selector1._domainkey.{ZONE}", "TXT", 3600, ["v=DKIM1; k=rsa; p=OLDKEY"]),
    ])
    planned = plan_json("--phase", "cutover")
    foreign = {(f["name"], f["type"]) for f in planned["foreign"]}
    assert {(f"www.{ZONE}", "A"), (f"_github-challenge.{ZONE}", "TXT"), (f"selector1._domainkey.{ZONE}", "TXT")} <= foreign
    assert not foreign & {(c["name"], c["type"]) for c in planned["changes"]}
    assert planned["counts"]["foreign"] == 5


def test_cutover_flips_the_mx_and_that_is_the_one_hazard(aws, project):
    apply(*aws, plan_json())
    planned = plan_json("--phase", "cutover")
    assert [(c["action"], c["name"], c["type"]) for c in planned["changes"]] == [("update", ZONE, "MX")]
    mx = planned["changes"][0]
    assert (mx["before"]["values"], mx["after"]["values"]) == (["10 old.example.com."], ["10 mail.example.com."])
    assert kinds(planned) == ["mx"]
    assert planned["hazards"][0]["message"] == "mail for example.com goes to 10 mail.example.com. instead of 10 old.example.com."


def test_decommission_shows_spf_tightening_and_the_old_hosts_records_leaving(aws, project):
    apply(*aws, plan_json())
    apply(*aws, plan_json("--phase", "cutover"))
    planned = plan_json("--phase", "decommission")
    actions = {(c["action"], c["name"], c["type"]) for c in planned["changes"]}
    assert ("delete", OLD, "A") in actions
    assert ("update", ZONE, "TXT") in actions and ("update", f"_mta-sts.{ZONE}", "TXT") in actions
    spf = next(h for h in planned["hazards"] if h["kind"] == "spf")["message"]
    assert "stops authorising ip4:192.0.2.25" in spf and "tightens ~all to -all" in spf
    assert sorted(kinds(planned)) == ["mta-sts", "mx-ttl", "spf"]


def test_rollback_from_cutover_shows_the_mx_going_back_to_the_old_server(aws, project):
    apply(*aws, plan_json())
    apply(*aws, plan_json("--phase", "cutover"))
    planned = plan_json("--phase", "provision")
    assert [(c["action"], c["type"]) for c in planned["changes"]] == [("update", "MX")]
    assert planned["hazards"][0]["message"].endswith("goes to 10 old.example.com. instead of 10 mail.example.com.")


def organisation_zone(route53, zone_id) -> None:
    """A zone the organisation has run for years: its own mail records, different from the stack's."""
    change(route53, zone_id, [
        ("CREATE", ZONE, "MX", 3600, [f"10 {OLD}."]),
        ("CREATE", ZONE, "TXT", 3600, ["v=spf1 mx include:_spf.crm.example -all"]),
        ("CREATE", ZONE, "A", 3600, ["192.0.2.80"]),
        ("CREATE", f"_dmarc.{ZONE}", "TXT", 3600, ["v=DMARC1; p=quarantine"]),
        ("CREATE", f"_smtp._tls.{ZONE}", "TXT", 3600, ["v=TLSRPTv1; rua=mailto:tls@example.com"]),
        ("CREATE", f"_submission._tcp.{ZONE}", "SRV", 3600, [f"0 1 587 {OLD}."]),
        ("CREATE", f"_imaps._tcp.{ZONE}", "SRV", 3600, [f"0 1 993 {OLD}."]),
        ("CREATE", f"autoconfig.{ZONE}", "CNAME", 3600, [f"{OLD}."]),
        ("CREATE", f"autodiscover.{ZONE}", "CNAME", 3600, [f"{OLD}."]),
        ("CREATE", f"www.{ZONE}", "A", 3600, ["192.0.2.80"]),
    ])


def test_a_plan_taking_over_too_many_existing_records_is_refused_unless_forced(aws, project):
    organisation_zone(*aws)
    refused = plan()
    assert refused.exit_code == 1
    # The organisation's DMARC is kept (not listed in mailstack:dns.replace): 6 updates, not 7.
    assert "plan refused as unsafe: it would update 6 of the zone's 12 record sets that the stack did not write " \
           "(50%, more than 30%)" in refused.stderr
    assert "run again with --force" in refused.stderr
    forced = plan("--force", "--detailed-exitcode")
    assert forced.exit_code == 2, forced.output
    assert "unsafe, needs --force: it would update 6" in forced.stdout
    hazards = json.loads(plan("--force", "--format", "json").stdout)["hazards"]
    # Nothing the organisation published is loosened or dropped: DMARC kept, SPF merged.
    assert not any(h["kind"] == "dmarc" for h in hazards)
    assert not any(h["kind"] == "spf" and "stops authorising" in h["message"] for h in hazards)


def test_a_zone_of_3000_record_sets_is_read_through_every_page(aws, project):
    # Route53 (and moto) list 300 record sets a page: 3,020 record sets are 11 pages, every boundary crossed.
    route53, zone_id = aws
    apply(route53, zone_id, plan_json())
    change(route53, zone_id, [("CREATE", f"h{n}.{ZONE}", "A", 300, [f"198.51.100.{n % 250 + 1}"]) for n in range(3_000)])
    planned = plan_json("--detailed-exitcode")
    assert planned["counts"]["existing"] == 3_000 + 18 + 2
    assert planned["counts"]["foreign"] == 3_002 and planned["changes"] == []
    text = plan().stdout
    assert "... and 2902 more (--format json lists all)" in text


def test_txt_values_over_255_characters_compare_by_their_joined_text(aws, project):
    route53, zone_id = aws
    verification = "site-verification=" + "x" * 282  # 300 characters: two strings in Route53
    change(route53, zone_id, [
        ("CREATE", ZONE, "TXT", 3600, [f"{verification[:255]}\"\"{verification[255:]}"]),
        ("CREATE", f"long.{ZONE}", "TXT", 300, [f"{verification[:200]}\"\"{verification[200:]}"]),
    ])
    planned = plan_json()
    apex = next(c for c in planned["changes"] if (c["name"], c["type"]) == (ZONE, "TXT"))
    assert verification in apex["after"]["values"] and verification in apex["before"]["values"]
    assert [f["values"] for f in planned["foreign"] if f["name"] == f"long.{ZONE}"] == [[verification]]
    dkim = next(c for c in planned["changes"] if c["name"] == f"mailstack._domainkey.{ZONE}")
    assert dkim["after"]["served"][0].count('""') == 1 and len(dkim["after"]["values"][0]) > 255
    apply(route53, zone_id, planned)
    # Written as two strings split at 255, read back, joined: nothing left to change.
    assert plan_json("--detailed-exitcode")["changes"] == []


def write_evidence(project: Path, address: str) -> None:
    """Evidence that lets the cutover through: a fresh verification of the host that compared every roster mailbox
    and saw mail leave by the stack's relay, the lowered TTL served long enough."""
    now = datetime.now(timezone.utc)
    (project / "stacks" / "evidence").mkdir(exist_ok=True)
    (project / "stacks" / "evidence" / "test.json").write_text(json.dumps({
        "verification": {"at": (now - timedelta(hours=1)).isoformat(), "host_name": HOST, "host_ip": address,
                         "certificate_sha256": "ab" * 32, "checks": ["all"],
                         "mailboxes": [f"user{n}@example.com" for n in range(3)], "outbound": RELAYED},
        "previous_mx_ttl": 3600, "lowered_ttl_seen_at": (now - timedelta(hours=2)).isoformat()}))


def test_markdown_of_the_cutover_puts_the_mx_hazard_first_and_collapses_the_unchanged(aws, project):
    write_evidence(project, "203.0.113.7")
    apply(*aws, plan_json())
    markdown = plan("--phase", "cutover", "--format", "markdown").stdout
    lines = markdown.splitlines()
    assert lines[0] == "### DNS plan of stack `test`: zone `example.com`, phase `cutover`"
    assert lines[2:5] == ["> [!WARNING]", "> **1 hazard(s): where mail goes, who may send**",
                          "> - **mx** `example.com`: mail for example.com goes to 10 mail.example.com. instead of "
                          "10 old.example.com."]
    assert "| ~ update | `example.com` | MX | 300 | `10 old.example.com.` | `10 mail.example.com.` | mail goes to the " \
           "new host; TTL kept low so a rollback propagates fast |" in lines
    assert "<summary>17 unchanged record sets</summary>" in lines
    assert lines.index("<summary>17 unchanged record sets</summary>") > lines.index("> [!WARNING]")
    assert "- host address 203.0.113.7: the verified address recorded in stacks/evidence/test.json" in lines


def test_markdown_says_first_when_pulumi_up_would_refuse_the_phase(aws, project):
    lines = plan("--phase", "cutover", "--format", "markdown").stdout.splitlines()
    assert lines[2:4] == ["> [!CAUTION]", "> `pulumi up` would refuse the cutover phase now:"]
    assert "> - no verification evidence: run mailstack verify -s ENV --record against mail.example.com first" in lines


def test_the_host_address_comes_from_its_elastic_ip(aws, project):
    ec2 = boto3.client("ec2", region_name="eu-west-1", endpoint_url=aws[0].meta.endpoint_url)
    address = ec2.allocate_address(Domain="vpc", TagSpecifications=[{
        "ResourceType": "elastic-ip", "Tags": [{"Key": "Name", "Value": HOST}]}])["PublicIp"]
    planned = plan_json()
    host = next(c for c in planned["changes"] if (c["name"], c["type"]) == (HOST, "A"))
    assert host["after"]["values"] == [address] and host["stand_in"] is None
    assert f"host address {address}: the Elastic IP tagged {HOST}" in planned["notes"]


def test_without_aws_the_plan_is_an_error_naming_what_could_not_be_read(project, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.13.2:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = plan("--detailed-exitcode")
    assert result.exit_code == 1
    assert "could not read the Route53 zone example.com" in result.stderr and "Traceback" not in result.output
