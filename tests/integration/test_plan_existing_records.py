"""The rules for records a zone already holds, on zones read through boto3 from moto in server mode (real HTTP)."""

from __future__ import annotations

import json
import shutil
import urllib.request

import boto3
import pytest
import yaml
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.host.plan import Known, stack_plan
from mailstack.infra import route53
from mailstack.stack.settings import load_stack_file
from tests.conftest import PROJECT, moto_server, route53_value, write_roster

pytestmark = pytest.mark.integration
ADDRESS = "127.0.41.1"  # inside 127.0.0.0/8, which lo carries: nothing to add
ZONE = "example.org"
HOST = "mail.example.org"
OLD = "old.example.org"
KEY = "v=DKIM1; k=rsa; p=" + "N" * 392  # the stack's key, as `pulumi stack output` would give it
runner = CliRunner()


@pytest.fixture(scope="module")
def endpoint():
    with moto_server(ADDRESS) as url:
        yield url


@pytest.fixture
def zone_id(endpoint, monkeypatch) -> str:
    """A fresh emulated account with one public zone; boto3 clients through AWS_ENDPOINT_URL."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).close()
    for key, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "eu-west-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    return client(endpoint).create_hosted_zone(Name=ZONE, CallerReference="existing")["HostedZone"]["Id"]


def client(endpoint: str):
    return boto3.client("route53", endpoint_url=endpoint, region_name="us-east-1")


def serve(endpoint: str, zone: str, *sets: tuple[str, str, list[str]]) -> None:
    client(endpoint).change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": {"Name": name, "Type": rtype, "TTL": 3600, "ResourceRecords": [
            {"Value": route53_value(rtype, v)} for v in values]}} for name, rtype, values in sets]})


@pytest.fixture
def project(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "stacks" / "mailboxes").mkdir(parents=True)
    shutil.copy(PROJECT / "Pulumi.yaml", project)
    write_roster(project / "stacks" / "mailboxes" / "test.csv", 2, domain=ZONE)
    monkeypatch.chdir(project)
    return project


def stack(project, **config) -> None:
    values = {"aws:region": "eu-west-1", "mailstack:domains": [ZONE], "mailstack:zone": ZONE,
              "mailstack:host": {"name": HOST},
              "mailstack:old_server": {"host": OLD, "ip": "192.0.2.25", "imap": f"imaps://{OLD}:993"},
              "mailstack:roster": "stacks/mailboxes/test.csv",
              **{f"mailstack:{k}": v for k, v in config.items()}}
    (project / "stacks" / "Pulumi.test.yaml").write_text(yaml.safe_dump({"config": values}))


def planned(*args: str) -> dict:
    result = runner.invoke(app, ["plan", "-s", "test", "--format", "json", "--force", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def existing(plan: dict, name: str, rtype: str) -> dict[str, tuple[str, str]]:
    return {e["value"]: (e["becomes"], e["reason"]) for e in plan["existing"] if (e["name"], e["type"]) == (name, rtype)}


def after(plan: dict, name: str, rtype: str) -> list[str]:
    entries = [c["after"] for c in plan["changes"] if (c["name"], c["type"]) == (name, rtype)]
    entries += [u for u in plan["unchanged"] if (u["name"], u["type"]) == (name, rtype)]
    (entry,) = entries
    return entry["values"]


def test_spf_with_third_party_includes_is_merged(endpoint, zone_id, project):
    stack(project)
    serve(endpoint, zone_id, (ZONE, "TXT", ["v=spf1 include:_spf.crm.example include:servers.mcsv.net -all",
                                            "google-site-verification=abc"]))
    plan = planned()
    assert after(plan, ZONE, "TXT") == [
        "google-site-verification=abc",
        "v=spf1 include:_spf.crm.example include:servers.mcsv.net a:mail.example.org ip4:192.0.2.25 -all"]
    fates = existing(plan, ZONE, "TXT")
    assert fates["v=spf1 include:_spf.crm.example include:servers.mcsv.net -all"][0] == "merged"
    assert fates["google-site-verification=abc"][0] == "kept"
    assert not [h for h in plan["hazards"] if h["kind"] == "spf" and "stops authorising" in h["message"]]


def test_an_spf_merged_over_ten_lookups_stops_the_plan(endpoint, zone_id, project):
    stack(project)
    serve(endpoint, zone_id, (ZONE, "TXT", ["v=spf1 " + " ".join(f"include:s{n}.example" for n in range(10)) + " ~all"]))
    result = runner.invoke(app, ["plan", "-s", "test", "--force"])
    assert result.exit_code == 1
    assert "plan refused: example.org TXT: the SPF record merged with the zone's would need 11 DNS lookups" \
           in result.stderr
    assert "Traceback" not in result.output


def test_dmarc_reject_is_kept_and_replaced_only_when_listed(endpoint, zone_id, project):
    serve(endpoint, zone_id, (f"_dmarc.{ZONE}", "TXT", ["v=DMARC1; p=reject; rua=mailto:dmarc@example.org"]))
    stack(project)
    plan = planned()
    assert after(plan, f"_dmarc.{ZONE}", "TXT") == ["v=DMARC1; p=reject; rua=mailto:dmarc@example.org"]
    assert existing(plan, f"_dmarc.{ZONE}", "TXT")["v=DMARC1; p=reject; rua=mailto:dmarc@example.org"][0] == "kept"
    assert not [h for h in plan["hazards"] if h["kind"] == "dmarc"]
    stack(project, dns={"replace": [f"_dmarc.{ZONE}"]})
    plan = planned()
    assert after(plan, f"_dmarc.{ZONE}", "TXT") == ["v=DMARC1; p=none; rua=mailto:postmaster@example.org"]
    assert [h["message"] for h in plan["hazards"] if h["kind"] == "dmarc"] == [
        "DMARC loosens p=reject -> p=none: mail forged in the domain's name is no longer stopped"]


def test_a_dkim_selector_taken_by_another_key_is_refused(endpoint, zone_id, project):
    serve(endpoint, zone_id, (f"mailstack._domainkey.{ZONE}", "TXT", ["v=DKIM1; k=rsa; p=OLDKEY"]))
    stack(project)
    settings = load_stack_file("test", project).settings
    zone = route53.read_zone(ZONE)
    host_ip = Known("203.0.113.9", "test")
    refused = stack_plan(settings, zone, host_ip=host_ip, dkim=Known(KEY, "the stack's key"))
    assert [p.split(":")[0] for p in refused.problems] == [f"mailstack._domainkey.{ZONE} TXT"]
    free = stack_plan(settings.model_copy(update={"dns": settings.dns.model_copy(update={"dkim_selector": "s2"})}),
                      zone, host_ip=host_ip, dkim=Known(KEY, "the stack's key"))
    assert free.problems == ()
    # Without the stack's key (no pulumi CLI here) the plan shows the served key and says what pulumi up would do.
    plan = planned()
    (dkim,) = [u for u in plan["unchanged"] if u["name"] == f"mailstack._domainkey.{ZONE}"]
    assert "if it is not the stack's key, pulumi up refuses it" in dkim["stand_in"]


def test_two_mx_records_the_backup_is_kept_through_cutover_and_rollback(endpoint, zone_id, project):
    serve(endpoint, zone_id, (ZONE, "MX", [f"10 {OLD}.", "20 backup.mx.example."]))
    stack(project, phase="cutover")
    plan = planned()
    assert after(plan, ZONE, "MX") == [f"10 {HOST}.", "20 backup.mx.example."]
    fates = existing(plan, ZONE, "MX")
    assert fates[f"10 {OLD}."][0] == "replaced" and fates["20 backup.mx.example."][0] == "kept"
    stack(project, phase="cutover", dns={"remove_mx": ["backup.mx.example"]})
    plan = planned()
    assert after(plan, ZONE, "MX") == [f"10 {HOST}."]
    assert existing(plan, ZONE, "MX")["20 backup.mx.example."] == ("removed", "listed in mailstack:dns.remove_mx")
