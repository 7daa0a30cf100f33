"""The DNS plan's pure core: typed values, the diff, ownership, hazards, thresholds, and its three outputs."""

from __future__ import annotations

import json

from mailstack.host import plan
from mailstack.host.plan import Caa, Known, Mx, Plain, Srv, Thresholds, Txt, parse_value, record_set, stack_plan
from mailstack.host.plan_output import PlanJson, PlanMarkdown, PlanText
from mailstack.stack.settings import settings_from_values
from tests.conftest import stack_values

IP = Known("203.0.113.7", "the Elastic IP tagged mail.example.com")
DKIM = Known("v=DKIM1; k=rsa; p=" + "K" * 392, "the stack's key (pulumi stack output)")


def settings(**overrides):
    values = stack_values("r.csv", old_server={"host": "old.example.com", "ip": "192.0.2.25",
                                               "imap": "imaps://old.example.com:993"}, **overrides)
    return settings_from_values(values, source="test")


def desired_zone(phase: str = "provision", **overrides) -> list[plan.RecordSet]:
    """The zone as the stack leaves it after ``pulumi up`` of ``phase``."""
    return [d.records for d in stack_plan(settings(phase=phase, **overrides), [], host_ip=IP, dkim=DKIM).desired]


def test_values_are_typed_so_spellings_of_one_record_are_equal():
    assert parse_value("MX", "10 Mail.Example.COM.") == parse_value("MX", "10 mail.example.com") == Mx(10, "mail.example.com")
    assert parse_value("SRV", "0 1 465 mail.example.com.") == Srv(0, 1, 465, "mail.example.com")
    assert parse_value("CAA", '0 issue "letsencrypt.org"') == Caa(0, "issue", "letsencrypt.org")
    assert parse_value("A", " 192.0.2.1 ") == Plain("192.0.2.1")
    assert parse_value("CNAME", "Host.Example.com") == Plain("host.example.com.")
    assert parse_value("MX", "not an mx") == Plain("not an mx")


def test_txt_strings_are_joined_however_they_were_split():
    text = "v=DKIM1; k=rsa; p=" + "A" * 300
    served = f'"{text[:255]}" "{text[255:]}"'
    declared = f'{text[:255]}""{text[255:]}'
    other_split = f'"{text[:100]}" "{text[100:]}"'
    assert parse_value("TXT", served) == parse_value("TXT", declared) == parse_value("TXT", other_split) == Txt(text)
    assert parse_value("TXT", r'"say \"hi\" \073 ok"') == Txt('say "hi" ; ok')  # Route53 escapes in octal


def test_route53_names_are_unescaped_and_lower_cased():
    rrset = {"Name": "\\052.Example.com.", "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": "192.0.2.1"}]}
    assert plan.from_route53(rrset).key == ("*.example.com", "A", "")


def test_an_empty_zone_gets_every_record_set_created():
    result = stack_plan(settings(), [], host_ip=IP, dkim=DKIM)
    assert result.count("create") == len(result.desired) and not result.foreign and not result.unchanged


def test_a_zone_in_the_desired_state_has_no_change():
    result = stack_plan(settings(), desired_zone(), host_ip=IP, dkim=DKIM)
    assert not result.has_changes and len(result.unchanged) == len(result.desired)


def test_records_the_stack_never_declares_are_foreign_and_left_alone():
    www = record_set("www.example.com", "A", 300, ["192.0.2.80"])
    result = stack_plan(settings(), [*desired_zone(), www], host_ip=IP, dkim=DKIM)
    assert result.foreign == (www,) and not result.has_changes


def test_cutover_changes_only_the_mx_and_its_one_hazard_is_the_flip():
    result = stack_plan(settings(phase="cutover"), desired_zone("provision"), host_ip=IP, dkim=DKIM)
    assert [(c.action, c.records.type) for c in result.changes] == [("update", "MX")]
    assert [(h.kind, h.message) for h in result.hazards] == [
        ("mx", "mail for example.com goes to 10 mail.example.com. instead of 10 old.example.com.")]


def test_decommission_deletes_the_old_servers_record_and_tightens_spf_and_mta_sts():
    result = stack_plan(settings(phase="decommission"), desired_zone("cutover"), host_ip=IP, dkim=DKIM)
    assert ("delete", "old.example.com", "A") in {(c.action, c.records.name, c.records.type) for c in result.changes}
    kinds = {h.kind: h.message for h in result.hazards}
    assert set(kinds) == {"mx-ttl", "spf", "mta-sts"}
    assert kinds["spf"] == ("SPF stops authorising ip4:192.0.2.25: mail such a host still sends for example.com fails "
                            "SPF; tightens ~all to -all: mail from hosts not listed is rejected by receivers that "
                            "honour SPF")
    assert kinds["mta-sts"].startswith("MTA-STS tightens testing -> enforce")
    assert kinds["mx-ttl"].startswith("MX TTL 300 s -> 3600 s")


REPLACE_DMARC = {"replace": ["_dmarc.example.com"]}


def test_a_stricter_dmarc_policy_is_a_hazard_and_a_looser_one_too():
    tighter = stack_plan(settings(dmarc_policy="reject", dns=REPLACE_DMARC), desired_zone(), host_ip=IP, dkim=DKIM)
    assert [h.message for h in tighter.hazards] == [
        "DMARC tightens p=none -> p=reject: mail failing SPF and DKIM is refused"]
    looser = stack_plan(settings(dns=REPLACE_DMARC), desired_zone(dmarc_policy="quarantine"), host_ip=IP, dkim=DKIM)
    assert [h.kind for h in looser.hazards] == ["dmarc"] and "loosens p=quarantine -> p=none" in looser.hazards[0].message


def test_a_lowered_mx_ttl_on_the_existing_mx_is_a_hazard_of_its_own():
    zone = [r for r in desired_zone() if r.type != "MX"] + [record_set("example.com", "MX", 86400, ["10 old.example.com."])]
    result = stack_plan(settings(), zone, host_ip=IP, dkim=DKIM)
    assert [h.kind for h in result.hazards] == ["mx-ttl"]
    assert not result.changes[0].takes_over  # the same MX, only its TTL: the stack writes these values


def test_spf_dropping_the_old_server_at_decommission_is_named_and_the_third_party_kept():
    zone = [r for r in desired_zone("cutover") if (r.name, r.type) != ("example.com", "TXT")]
    zone.append(record_set("example.com", "TXT", 3600, ['"v=spf1 include:_spf.crm.example a:old.example.com ~all"']))
    result = stack_plan(settings(phase="decommission"), zone, host_ip=IP, dkim=DKIM)
    spf = [h.message for h in result.hazards if h.kind == "spf"]
    assert spf == ["SPF stops authorising a:old.example.com: mail such a host still sends for example.com fails SPF; "
                   "tightens ~all to -all: mail from hosts not listed is rejected by receivers that honour SPF"]
    txt = next(c for c in result.changes if (c.records.name, c.records.type) == ("example.com", "TXT"))
    assert [str(v) for v in txt.desired.values] == ["v=spf1 include:_spf.crm.example a:mail.example.com -all"]


def test_the_apex_keeps_txt_values_it_does_not_own_as_the_program_does():
    zone = [r for r in desired_zone() if (r.name, r.type) != ("example.com", "TXT")]
    zone.append(record_set("example.com", "TXT", 3600, ['"google-site-verification=abc"', '"v=spf1 mx -all"']))
    change = next(c for c in stack_plan(settings(), zone, host_ip=IP, dkim=DKIM).changes if c.records.type == "TXT")
    assert [str(v) for v in change.desired.values] == ["google-site-verification=abc",
                                                        "v=spf1 mx a:mail.example.com ip4:192.0.2.25 -all"]
    assert [(f.value, f.becomes) for f in change.fates] == [("v=spf1 mx -all", "merged"),
                                                            ("google-site-verification=abc", "kept")]


def zone_of(count: int, taken_over: int) -> list[plan.RecordSet]:
    """``count`` record sets, ``taken_over`` of which hold the stack's names with the organisation's values."""
    ours = [r for r in desired_zone() if r.type == "SRV"][:taken_over]
    theirs = [record_set(r.name, r.type, r.ttl, ["0 1 1 elsewhere.example."]) for r in ours]
    filler = [record_set(f"h{n}.example.com", "A", 300, ["192.0.2.1"]) for n in range(count - len(theirs))]
    return theirs + filler


def test_updating_more_than_30_percent_of_record_sets_the_stack_did_not_write_is_unsafe():
    unsafe = stack_plan(settings(), zone_of(10, 4), host_ip=IP, dkim=DKIM)
    assert unsafe.unsafe_reasons() == ("it would update 4 of the zone's 10 record sets that the stack did not write "
                                       "(40%, more than 30%)",)
    assert stack_plan(settings(), zone_of(10, 3), host_ip=IP, dkim=DKIM).unsafe_reasons() == ()


def test_a_zone_under_the_minimum_size_is_never_unsafe_and_thresholds_can_be_set():
    assert stack_plan(settings(), zone_of(9, 6), host_ip=IP, dkim=DKIM).unsafe_reasons() == ()
    strict = stack_plan(settings(), zone_of(10, 1), host_ip=IP, dkim=DKIM, thresholds=Thresholds(max_update_share=0.05))
    assert len(strict.unsafe_reasons()) == 1


def test_a_stand_in_dkim_key_never_shows_a_change_to_a_published_key():
    standin = Known("v=DKIM1; k=rsa; p=STANDIN", "a stand-in derived from the stack name", stand_in=True)
    result = stack_plan(settings(), desired_zone(), host_ip=IP, dkim=standin)
    assert not result.has_changes
    dkim = next(d for d in result.unchanged if d.records.name.startswith("mailstack._domainkey."))
    assert "not known here" in dkim.stand_in
    assert "[stand-in: the stack's DKIM key is not known here" in PlanText().render(result, "t")
    created = stack_plan(settings(), [], host_ip=IP, dkim=standin)
    assert next(c for c in created.changes if c.records.name.startswith("mailstack._domainkey.")).stand_in == \
        "DKIM key is a stand-in derived from the stack name"


def test_the_three_outputs_show_the_same_plan():
    result = stack_plan(settings(phase="cutover"), desired_zone(), host_ip=IP, dkim=DKIM)
    text = PlanText().render(result, "test")
    assert "Changes: 0 to create, 1 to update, 0 to delete; 17 unchanged; 0 not the stack's (left alone)" in text
    assert "  ! mx       mail for example.com goes to 10 mail.example.com. instead of 10 old.example.com." in text
    assert "      - 10 old.example.com.\n      + 10 mail.example.com.\n" in text
    markdown = PlanMarkdown().render(result, "test")
    assert "| ~ update | `example.com` | MX | 300 | `10 old.example.com.` | `10 mail.example.com.` |" in markdown
    assert "<details>\n<summary>17 unchanged record sets</summary>" in markdown
    data = json.loads(PlanJson().render(result, "test"))
    assert data["counts"]["update"] == 1 and data["hazards"][0]["kind"] == "mx"
    assert data["changes"][0]["before"]["values"] == ["10 old.example.com."]


def test_long_values_are_shortened_for_people_but_whole_in_json():
    result = stack_plan(settings(), [], host_ip=IP, dkim=DKIM)
    assert "(410 characters)" in PlanText().render(result, "t") and "(410 characters)" in PlanMarkdown().render(result, "t")
    dkim = next(c for c in json.loads(PlanJson().render(result, "t"))["changes"] if c["name"].startswith("mailstack._"))
    assert dkim["after"]["values"] == [DKIM.value]
    assert dkim["after"]["served"] == [DKIM.value[:255] + '""' + DKIM.value[255:]]


def test_markdown_cells_escape_pipes():
    zone = [*desired_zone(), record_set("x.example.com", "TXT", 60, ['"a|b"'])]
    assert "`a\\|b`" in PlanMarkdown().render(stack_plan(settings(), zone, host_ip=IP, dkim=DKIM), "t")
