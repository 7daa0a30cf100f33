"""What the stack does with records the zone already holds: SPF merged, DMARC and DKIM kept or refused, other MX kept."""

from __future__ import annotations

import pytest

from mailstack.host import files as hostfiles
from mailstack.host.plan import Known, record_set, stack_plan
from mailstack.host.plan_output import PlanJson, PlanMarkdown, PlanText
from mailstack.host.records import Dkim, Record, decide, desired_records, spf_lookups
from mailstack.problems import InputError
from mailstack.stack.settings import settings_from_values
from tests.conftest import stack_values

OLD = {"host": "old.example.com", "ip": "192.0.2.25", "imap": "imaps://old.example.com:993"}
KEY = "v=DKIM1; k=rsa; p=" + "K" * 392


def settings(**overrides):
    return settings_from_values(stack_values("r.csv", old_server=OLD, **overrides), source="test")


def record(s, name: str, rtype: str) -> Record:
    return next(r for r in desired_records(s, ip="203.0.113.7", dkim=Dkim(s.dns.dkim_selector, KEY))
                if (r.name, r.type) == (name, rtype))


def spf_of(decision) -> str:
    return next(v for v in decision.record.values if v.startswith("v=spf1")).replace('""', "")


# ------------------------------------------------------------------ SPF


def test_third_party_includes_are_kept_and_the_stacks_hosts_added():
    s = settings()
    d = decide(s, record(s, "example.com", "TXT"), ['"v=spf1 include:_spf.crm.example include:news.example ~all"'])
    assert spf_of(d) == "v=spf1 include:_spf.crm.example include:news.example a:mail.example.com ip4:192.0.2.25 ~all"
    assert [(f.becomes, f.value) for f in d.fates] == [
        ("merged", "v=spf1 include:_spf.crm.example include:news.example ~all")]
    assert "adds a:mail.example.com ip4:192.0.2.25" in d.fates[0].reason
    assert d.problem is None and d.overwrite


def test_the_strictest_all_of_the_zone_is_kept_during_the_migration():
    s = settings()
    d = decide(s, record(s, "example.com", "TXT"), ['"v=spf1 mx -all"'])
    assert spf_of(d) == "v=spf1 mx a:mail.example.com ip4:192.0.2.25 -all"
    assert "keeps the zone's -all (stricter than the stack's ~all)" in d.fates[0].reason
    looser = decide(s, record(s, "example.com", "TXT"), ['"v=spf1 mx ?all"'])
    assert spf_of(looser).endswith(" ~all")


def test_decommission_drops_the_old_servers_own_terms_and_keeps_third_parties():
    s = settings(phase="decommission")
    served = '"v=spf1 include:_spf.crm.example a:old.example.com ip4:192.0.2.25/32 a:mail.example.com ~all"'
    d = decide(s, record(s, "example.com", "TXT"), [served])
    assert spf_of(d) == "v=spf1 include:_spf.crm.example a:mail.example.com -all"
    assert "drops the old server's a:old.example.com ip4:192.0.2.25/32 (decommission)" in d.fates[0].reason


def test_merging_again_changes_nothing():
    s = settings()
    first = decide(s, record(s, "example.com", "TXT"), ['"v=spf1 include:_spf.crm.example -all"', '"site=1"'])
    again = decide(s, record(s, "example.com", "TXT"), [f'"{v}"' for v in first.record.values])
    assert again.record.values == first.record.values
    assert [f.becomes for f in again.fates] == ["kept", "kept"]


def test_two_spf_records_become_one():
    s = settings()
    d = decide(s, record(s, "example.com", "TXT"), ['"v=spf1 include:a.example ~all"', '"v=spf1 ip4:198.51.100.1 -all"'])
    assert [v for v in d.record.values if v.startswith("v=spf1")] == [
        "v=spf1 include:a.example ip4:198.51.100.1 a:mail.example.com ip4:192.0.2.25 -all"]
    assert all("2 SPF records are a permanent error" in f.reason for f in d.fates)


def test_a_redirect_is_kept_and_no_all_is_added_that_would_disable_it():
    s = settings()
    d = decide(s, record(s, "example.com", "TXT"), ['"v=spf1 redirect=_spf.example.org"'])
    assert spf_of(d) == "v=spf1 a:mail.example.com ip4:192.0.2.25 redirect=_spf.example.org"
    assert spf_lookups(spf_of(d)) == 2


def test_a_merged_spf_over_ten_lookups_is_refused_naming_the_record_and_the_count():
    s = settings()
    served = '"v=spf1 ' + " ".join(f"include:s{n}.example" for n in range(9)) + ' mx ~all"'
    d = decide(s, record(s, "example.com", "TXT"), [served])
    assert d.problem.startswith("example.com TXT: the SPF record merged with the zone's would need 11 DNS lookups")
    assert "over RFC 7208's limit of 10" in d.problem
    within = decide(s, record(s, "example.com", "TXT"), ['"v=spf1 ' + " ".join(f"include:s{n}.example" for n in range(9)) + ' ~all"'])
    assert within.problem is None


def test_other_txt_values_at_the_apex_are_kept():
    s = settings()
    d = decide(s, record(s, "example.com", "TXT"), ['"google-site-verification=abc"'])
    assert d.record.values[1:] == ("google-site-verification=abc",)
    assert d.fates[0].becomes == "kept"


# ------------------------------------------------------------ DMARC and DKIM


def test_an_existing_dmarc_reject_is_kept_unless_listed_for_replacement():
    served = ['"v=DMARC1; p=reject; rua=mailto:dmarc@example.com"']
    s = settings()
    kept = decide(s, record(s, "_dmarc.example.com", "TXT"), served)
    assert kept.record.values == ("v=DMARC1; p=reject; rua=mailto:dmarc@example.com",)
    assert kept.fates[0].becomes == "kept" and "mailstack:dns.replace" in kept.fates[0].reason
    assert kept.record.reason == "DMARC: the zone's record kept (p=reject)"
    s = settings(dns={"replace": ["_dmarc.example.com"]})
    replaced = decide(s, record(s, "_dmarc.example.com", "TXT"), served)
    assert replaced.record.values == ("v=DMARC1; p=none; rua=mailto:postmaster@example.com",)
    assert replaced.fates[0].becomes == "replaced"


def test_another_dkim_key_at_the_selector_is_refused_unless_listed_for_replacement():
    s = settings(dns={"dkim_selector": "s2026"})
    other = ['"v=DKIM1; k=rsa; p=OLDKEY"']
    refused = decide(s, record(s, "s2026._domainkey.example.com", "TXT"), other)
    assert refused.problem.startswith("s2026._domainkey.example.com TXT: the zone already publishes another DKIM key "
                                      "at selector s2026")
    assert "mailstack:dns.dkim_selector" in refused.problem and not refused.overwrite
    assert decide(s, record(s, "s2026._domainkey.example.com", "TXT"), [f'"{KEY}"']).problem is None
    s = settings(dns={"dkim_selector": "s2026", "replace": ["s2026._domainkey.example.com"]})
    replaced = decide(s, record(s, "s2026._domainkey.example.com", "TXT"), other)
    assert replaced.problem is None and replaced.fates[0].becomes == "replaced"


def test_the_default_selector_is_not_a_common_one_and_reaches_opendkim(tmp_path):
    from tests.conftest import write_roster
    from mailstack.stack.roster import load_roster

    assert settings().dns.dkim_selector == "mailstack" == hostfiles.DKIM_SELECTOR
    s = settings(dns={"dkim_selector": "ms1"})
    roster = load_roster(write_roster(tmp_path / "r.csv", 1), domains=s.domains, default_quota="1G")
    files = hostfiles.render_host_files(s, roster, password_seed="x" * 48, mail_volume_id="vol-1",
                                        dkim_private_key="-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
    conf = files["/etc/opendkim.conf"].content
    assert "Selector ms1" in conf and "KeyFile /etc/opendkim/keys/ms1.private" in conf
    assert ("ms1._domainkey.example.com", "TXT") in {(r.name, r.type) for r in desired_records(s, ip="x", dkim=Dkim("ms1", KEY))}


def test_dns_settings_name_the_key_of_a_bad_value():
    with pytest.raises(InputError) as raised:
        settings(dns={"replace": ["_dmarc.example.org"], "remove_mx": ["old.example.com"]})
    text = str(raised.value)
    assert "mailstack:dns.replace: _dmarc.example.org is not a DMARC or DKIM name of the stack" in text
    assert "mailstack:dns.remove_mx: old.example.com is the old server" in text


# ------------------------------------------------------------------ MX


TWO_MX = ["10 old.example.com.", "20 backup.mx.example."]


def test_the_cutover_moves_the_old_servers_mx_and_keeps_a_backup_mx():
    s = settings(phase="cutover")
    d = decide(s, record(s, "example.com", "MX"), TWO_MX)
    assert d.record.values == ("10 mail.example.com.", "20 backup.mx.example.")
    assert [(f.value, f.becomes) for f in d.fates] == [("10 old.example.com.", "replaced"),
                                                       ("20 backup.mx.example.", "kept")]
    assert d.record.reason.endswith("; 1 other MX entry kept")


def test_a_rollback_moves_it_back_and_still_keeps_the_backup():
    s = settings()
    d = decide(s, record(s, "example.com", "MX"), ["10 mail.example.com.", "20 backup.mx.example."])
    assert d.record.values == ("10 old.example.com.", "20 backup.mx.example.")


def test_an_mx_listed_for_removal_is_removed_and_a_preferred_one_is_flagged():
    s = settings(phase="cutover", dns={"remove_mx": ["backup.mx.example"]})
    d = decide(s, record(s, "example.com", "MX"), [*TWO_MX, "5 filter.example."])
    assert d.record.values == ("10 mail.example.com.", "5 filter.example.")
    fates = {f.value: f for f in d.fates}
    assert fates["20 backup.mx.example."].becomes == "removed"
    assert "preference 5 is below the stack's 10: senders try it first" in fates["5 filter.example."].reason


def test_a_create_never_overwrites_and_a_read_set_may_be_overwritten():
    s = settings()
    assert not decide(s, record(s, "example.com", "MX"), []).overwrite
    assert decide(s, record(s, "example.com", "MX"), TWO_MX).overwrite


# ------------------------------------------------------------------ the plan says it


IP = Known("203.0.113.7", "the Elastic IP")
DKIM = Known(KEY, "the stack's key")


def organisation_zone():
    return [
        record_set("example.com", "MX", 3600, TWO_MX),
        record_set("example.com", "TXT", 3600, ['"v=spf1 include:_spf.crm.example -all"']),
        record_set("_dmarc.example.com", "TXT", 3600, ['"v=DMARC1; p=reject"']),
    ]


def test_the_plan_says_what_each_existing_record_becomes_and_why():
    result = stack_plan(settings(phase="cutover"), organisation_zone(), host_ip=IP, dkim=DKIM)
    text = PlanText().render(result, "t")
    assert "Existing records, what each becomes (4):" in text
    assert "  example.com MX: 20 backup.mx.example. -> kept: another MX (a backup or a filtering service)" in text
    assert "  example.com MX: 10 old.example.com. -> replaced: the old server's MX: mail goes to the new host" in text
    assert "  example.com TXT: v=spf1 include:_spf.crm.example -all -> merged: every other mechanism" in text
    assert "  _dmarc.example.com TXT: v=DMARC1; p=reject -> kept: an existing DMARC record is never replaced" in text
    assert not [h for h in result.hazards if h.kind == "dmarc"]
    assert result.hazards[0].message == ("mail for example.com goes to 10 mail.example.com. instead of "
                                         "10 old.example.com. (20 backup.mx.example. kept)")
    data = PlanJson().render(result, "t")
    assert '"becomes": "merged"' in data and '"problems": []' in data
    assert "| `example.com` | MX | `20 backup.mx.example.` | kept |" in PlanMarkdown().render(result, "t")


def test_a_refusal_is_listed_first_in_every_output():
    zone = [record_set("example.com", "TXT", 3600, ['"v=spf1 ' + " ".join(f"include:s{n}.x" for n in range(10)) + ' -all"'])]
    result = stack_plan(settings(), zone, host_ip=IP, dkim=DKIM)
    assert len(result.problems) == 1
    assert PlanText().render(result, "t").splitlines()[1].startswith("  refused: example.com TXT: the SPF record")
    assert "> Refused: `pulumi up` stops before changing anything:" in PlanMarkdown().render(result, "t")
