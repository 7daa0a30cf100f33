"""The Pulumi program against zones that already hold mail records (under mocks): what it declares, what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pytest

from mailstack.infra.offline import Evaluation, evaluate, reveal
from tests.conftest import RELAY, pulumi_config, stack_values, write_roster
from tests.infra.test_phases import EIPS, write_evidence


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "stacks" / "evidence").mkdir(parents=True)
    write_roster(tmp_path / "roster.csv", 3)
    return tmp_path


def zone(*sets: tuple[str, str, list[str]]) -> dict:
    """What ``aws.route53.get_records`` answers: these record sets, as Route53 names and serves them."""
    return {"aws:route53/getRecords:getRecords": {"id": "x", "zoneId": "Z", "resourceRecordSets": [
        {"name": name + ".", "type": rtype, "ttl": 3600, "resourceRecords": [{"value": v} for v in values]}
        for name, rtype, values in sets]}}


def run(project: Path, phase: str, existing: dict, **overrides) -> Evaluation:
    config = pulumi_config(stack_values(project / "roster.csv", phase=phase, **{"relay": RELAY, **overrides}))
    return evaluate(config, project_dir=project, stack="test", lookups={**EIPS, **existing})


def declared(evaluation: Evaluation) -> dict[str, dict]:
    return {r.name: reveal(r.inputs) for r in evaluation.of_type("aws:route53/record:Record")}


def test_spf_with_includes_is_merged_and_may_overwrite_the_set_it_was_read_from(project):
    existing = zone(("example.com", "TXT", ['"v=spf1 include:_spf.crm.example include:mailchimp.example ~all"']))
    evaluation = run(project, "provision", existing)
    records = declared(evaluation)
    assert records["example.com-TXT"]["records"] == [
        "v=spf1 include:_spf.crm.example include:mailchimp.example a:mail.example.com ip4:192.0.2.25 ~all"]
    assert records["example.com-TXT"]["allowOverwrite"] is True
    # Nothing served there: a create, which never overwrites a set that appears in between.
    assert records["_smtp._tls.example.com-TXT"]["allowOverwrite"] is False
    # It matters only when a record set is created: a later read (the stack's own set) is never shown as a change.
    assert {tuple(r.options["ignore_changes"]) for r in evaluation.of_type("aws:route53/record:Record")} == {
        ("allowOverwrite",)}


def test_decommission_keeps_the_third_parties_and_drops_the_old_server(project):
    write_evidence(project)
    existing = zone(("example.com", "TXT", ['"v=spf1 include:_spf.crm.example a:mail.example.com ip4:192.0.2.25 ~all"']))
    records = declared(run(project, "decommission", existing))
    assert records["example.com-TXT"]["records"] == ["v=spf1 include:_spf.crm.example a:mail.example.com -all"]


def test_an_existing_dmarc_reject_is_declared_as_it_is(project):
    existing = zone(("_dmarc.example.com", "TXT", ['"v=DMARC1; p=reject; rua=mailto:d@example.com"']))
    evaluation = run(project, "provision", existing)
    assert declared(evaluation)["_dmarc.example.com-TXT"]["records"] == ["v=DMARC1; p=reject; rua=mailto:d@example.com"]
    planned = {(r["name"], r["type"]): r for r in evaluation.outputs["dns_records"]}
    assert planned[("_dmarc.example.com", "TXT")]["reason"] == "DMARC: the zone's record kept (p=reject)"
    assert planned[("_dmarc.example.com", "TXT")]["existing"][0]["becomes"] == "kept"
    replaced = declared(run(project, "provision", existing, dns={"replace": ["_dmarc.example.com"]}))
    assert replaced["_dmarc.example.com-TXT"]["records"] == ["v=DMARC1; p=none; rua=mailto:postmaster@example.com"]


def test_a_dkim_selector_taken_by_another_key_is_refused_and_its_record_never_declared(project, caplog):
    existing = zone(("mailstack._domainkey.example.com", "TXT", ['"v=DKIM1; k=rsa; p=OLDKEY"']))
    with pytest.raises(Exception) as raised:
        run(project, "provision", existing)
    assert "no DNS record was changed" in str(raised.value)
    assert "mailstack._domainkey.example.com TXT: the zone already publishes another DKIM key at selector " \
           "mailstack" in caplog.text
    # Another selector is free: the program declares its key there.
    records = declared(run(project, "provision", existing, dns={"dkim_selector": "ms2"}))
    assert "ms2._domainkey.example.com-TXT" in records and "mailstack._domainkey.example.com-TXT" not in records


def test_the_cutover_keeps_a_second_mx(project):
    write_evidence(project)
    existing = zone(("example.com", "MX", ["10 mail.example.net.", "20 backup.mx.example."]))
    records = declared(run(project, "cutover", existing))
    assert records["example.com-MX"]["records"] == ["10 mail.example.com.", "20 backup.mx.example."]
    assert records["example.com-MX"]["allowOverwrite"] is True
    removed = declared(run(project, "cutover", existing, dns={"remove_mx": ["backup.mx.example"]}))
    assert removed["example.com-MX"]["records"] == ["10 mail.example.com."]


def test_an_spf_over_the_lookup_limit_is_refused_before_any_resource(project, caplog, declared_types):
    spf = '"v=spf1 ' + " ".join(f"include:s{n}.example" for n in range(10)) + ' ~all"'  # 10 + a:mail.example.com
    with pytest.raises(pulumi.RunError, match="nothing was changed"):
        run(project, "provision", zone(("example.com", "TXT", [spf])))
    assert "example.com TXT: the SPF record merged with the zone's would need 11 DNS lookups" in caplog.text
    assert declared_types == []
