"""Outbound mail: how a stack declares it, how verify reads the probe's delivery report, what the cutover gate asks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mailstack.checks import Result, Status, error, ok
from mailstack.checks.outbound import judge_report
from mailstack.migration.evidence import Evidence, OutboundProof, Verification, verification_of
from mailstack.migration.lifecycle import NO_OUTBOUND, cutover_gate, next_step, outbound_status
from mailstack.problems import InputError
from mailstack.stack.settings import SES_SIMULATOR, settings_from_values
from tests.conftest import RELAY, RELAYED, stack_values

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
HOST, IP = "mail.example.com", "203.0.113.25"
ROSTER = ("alice@example.com",)
LIFT = {"lifted_on": "2026-10-02", "case": "171234567800123"}
TOKEN = "0f3c9a"
PROBE = "probe@partner.example"


def settings(**overrides):
    return settings_from_values(stack_values("r.csv", **overrides), source="stacks/Pulumi.t.yaml")


def problems(**overrides) -> list[str]:
    with pytest.raises(InputError) as caught:
        settings(**overrides)
    return [str(p) for p in caught.value.problems]


# ------------------------------------------------------------------ settings


def test_each_way_out_is_a_route_with_its_summary_and_probe():
    assert settings().outbound is None
    relay = settings(relay=RELAY, outbound_probe=PROBE).outbound
    assert (relay.kind, relay.summary, relay.probe) == ("relay", "relay smtp.relay.example.net:587", PROBE)
    ses = settings(ses={"region": "eu-west-1"}).outbound
    assert (ses.kind, ses.summary, ses.probe) == ("ses", "Amazon SES (eu-west-1)", SES_SIMULATOR)
    lifted = settings(port25_lifted=LIFT).outbound
    assert lifted.kind == "port25" and lifted.probe is None
    assert lifted.summary == "direct on port 25 (lifted 2026-10-02, AWS case 171234567800123)"


def test_two_ways_out_are_refused_naming_both():
    assert problems(relay=RELAY, ses={}) == [
        "stacks/Pulumi.t.yaml: mailstack:relay: ses and relay are both declared: outgoing mail takes one way; "
        "keep one of ses, relay or port25_lifted"]


def test_a_probe_inside_the_stacks_domains_is_refused():
    assert problems(relay=RELAY, outbound_probe="someone@example.com") == [
        "stacks/Pulumi.t.yaml: mailstack:outbound_probe: someone@example.com is in a domain of this stack: mail to "
        "it never leaves the host; give an address elsewhere"]
    assert problems(relay=RELAY, outbound_probe="nobody") == [
        "stacks/Pulumi.t.yaml: mailstack:outbound_probe: 'nobody' is not an email address"]


def test_a_port25_lift_needs_its_date_and_case():
    found = problems(port25_lifted={"lifted_on": "last week", "case": "x"})
    assert len(found) == 2 and all("mailstack:port25_lifted." in p for p in found)
    assert any("lifted_on" in p for p in found) and any("case" in p and "support case" in p for p in found)


def test_an_ses_region_must_be_a_region():
    (found,) = problems(ses={"region": "Ireland"})
    assert "mailstack:ses.region" in found and "an AWS region (eu-west-1)" in found


# ------------------------------------------------------------------ the delivery report


def report(action: str, status: str, *, envid: str = TOKEN, recipient: str = PROBE, remote: str = "127.0.40.2",
           diagnostic: str = "smtp; 250 ok") -> bytes:
    """A delivery report as Postfix writes it (RFC 3464), for the probe ``envid``."""
    return f"""\
From: MAILER-DAEMON@mail.example.com (Mail Delivery System)
Subject: Successful Mail Delivery Report
To: user0@example.com
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="B.1/mail.example.com"

--B.1/mail.example.com
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.example.com.

--B.1/mail.example.com
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.com
X-Postfix-Queue-ID: 4Q1
X-Postfix-Sender: rfc822; user0@example.com
Original-Envelope-Id: {envid}
Arrival-Date: Mon, 23 Nov 2026 12:00:00 +0000 (UTC)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; {remote}
Diagnostic-Code: {diagnostic}

--B.1/mail.example.com
Content-Description: Message Headers
Content-Type: text/rfc822-headers

From: user0@example.com
To: {recipient}

--B.1/mail.example.com--
""".replace("\n", "\r\n").encode()


def test_a_relayed_report_passes_with_the_proof_of_the_route():
    route = settings(relay=RELAY, outbound_probe=PROBE).outbound
    result = judge_report(report("relayed", "2.0.0"), TOKEN, route, PROBE, 1.25)
    assert result.status is Status.OK
    assert result.detail == f"a probe to {PROBE} left the host in 1.2 s: relayed to 127.0.40.2 (250 ok)"
    assert result.facts["outbound"] == {"route": "relay", "summary": "relay smtp.relay.example.net:587",
                                        "probe": PROBE, "action": "relayed", "remote_mta": "127.0.40.2"}


def test_a_failed_report_is_an_error_with_the_relays_answer_and_what_to_check():
    route = settings(ses={}).outbound
    result = judge_report(report("failed", "5.7.1", diagnostic="smtp; 554 5.7.1 Email address is not verified"),
                          TOKEN, route, PROBE, 2)
    assert result.status is Status.ERROR
    assert result.detail == (f"the probe to {PROBE} did not leave: failed 5.7.1 from 127.0.40.2: "
                             "554 5.7.1 Email address is not verified")
    assert "production access" in result.remedy and "identity" in result.remedy


def test_a_delayed_report_is_not_a_pass():
    route = settings(port25_lifted=LIFT, outbound_probe=PROBE).outbound
    result = judge_report(report("delayed", "4.4.1", diagnostic="smtp; connect timed out"), TOKEN, route, PROBE, 3)
    assert result.status is Status.ERROR and "did not leave: delayed 4.4.1" in result.detail


def test_a_report_on_another_probe_is_not_judged():
    assert judge_report(report("relayed", "2.0.0", envid="another"), TOKEN, None, PROBE, 1) is None
    assert judge_report(b"Subject: hello\r\n\r\nnot a report\r\n", TOKEN, None, PROBE, 1) is None


# ------------------------------------------------------------------ the cutover gate


def ready(**verification) -> Evidence:
    return Evidence(
        verification=Verification(at=NOW - timedelta(hours=1), host_name=HOST, host_ip=IP,
                                  certificate_sha256="ab" * 32, checks=["all"], mailboxes=list(ROSTER),
                                  **verification),
        previous_mx_ttl=3600, lowered_ttl_seen_at=NOW - timedelta(hours=2))


def gate(stack, evidence):
    return cutover_gate(stack, evidence, NOW, host_name=HOST, host_ip=IP, roster=ROSTER)


def test_the_cutover_passes_with_the_route_declared_and_its_proof():
    assert gate(settings(phase="cutover", relay=RELAY), ready(outbound=OutboundProof(**RELAYED))).reasons == ()


def test_the_cutover_without_a_way_out_is_refused_saying_both_choices():
    decision = gate(settings(phase="cutover"), ready(outbound=OutboundProof(**RELAYED)))
    assert decision.reasons == (NO_OUTBOUND,)
    assert "mailstack:ses" in NO_OUTBOUND and "mailstack:relay" in NO_OUTBOUND
    assert "mailstack:port25_lifted" in NO_OUTBOUND and "mailstack verify -s ENV --record" in NO_OUTBOUND


def test_the_cutover_without_the_proof_is_refused():
    decision = gate(settings(phase="cutover", relay=RELAY), ready())
    assert decision.reasons == (
        "the verification did not see mail leave the host (relay smtp.relay.example.net:587): run mailstack verify "
        "-s ENV --record, whose outbound check sends a probe out and reads the delivery report back",)


def test_a_proof_of_another_route_does_not_count():
    decision = gate(settings(phase="cutover", ses={"region": "eu-west-1"}), ready(outbound=OutboundProof(**RELAYED)))
    assert decision.reasons == (
        "the verification saw mail leave by relay smtp.relay.example.net:587, but the stack now declares "
        "Amazon SES (eu-west-1): run mailstack verify -s ENV --record again",)


def test_only_a_passing_outbound_check_is_recorded_as_proof():
    certificate = ok("certificate", "trusted", sha256="ab" * 32)
    passed = ok("outbound mail", "left", outbound=RELAYED)
    assert verification_of([certificate, passed], HOST, IP, NOW).outbound == OutboundProof(**RELAYED)
    failed: Result = error("outbound mail", "did not leave", "fix it")
    assert verification_of([certificate, failed], HOST, IP, NOW).outbound is None


def test_next_step_and_plan_say_how_mail_leaves_and_whether_it_was_seen():
    assert next_step(settings(), "prod").startswith("declare how mail leaves the host (mailstack:ses")
    assert not next_step(settings(relay=RELAY), "prod").startswith("declare")
    assert outbound_status(settings(), None) == "outgoing mail: " + NO_OUTBOUND
    assert outbound_status(settings(relay=RELAY), None) == (
        "outgoing mail: relay smtp.relay.example.net:587; not seen leaving yet (mailstack verify -s ENV --record "
        "sends the probe)")
    assert outbound_status(settings(relay=RELAY), ready(outbound=OutboundProof(**RELAYED))) == (
        "outgoing mail: relay smtp.relay.example.net:587; verified: a probe to probe@partner.example was relayed "
        "by smtp.relay.example.net")
    assert "three Easy DKIM CNAMEs" in outbound_status(settings(ses={}), None)


# ------------------------------------------------------------------ verify's wiring


def test_verify_refuses_a_probe_address_inside_the_domains_before_checking_anything():
    from typer.testing import CliRunner

    from mailstack.cli import app

    result = CliRunner().invoke(app, ["verify", "--host", "mail.example.com", "--domain", "example.com",
                                      "--outbound-probe", "someone@example.com"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--outbound-probe: someone@example.com is in a domain of this stack" in result.output


def test_a_stack_declaring_no_way_out_fails_the_outbound_check_saying_what_to_declare():
    from mailstack.checks import Target
    from mailstack.checks.outbound import CHECK
    from mailstack.cli.verify import _outbound_check

    check = _outbound_check("prod", settings(), "example.com", None)
    (result,) = check(Target(host=HOST, domain="example.com"))
    assert (result.check, result.status) == (CHECK, Status.ERROR)
    assert result.detail.startswith("stack prod declares no way for mail to leave the host")
    assert "mailstack:ses" in result.remedy and "mailstack:port25_lifted" in result.remedy
    assert _outbound_check(None, None, "example.com", None) is None  # no stack, no probe: skipped, and said so


def test_a_declared_relay_without_a_probe_address_is_an_error_never_skipped():
    from mailstack.checks import Target
    from mailstack.cli.verify import _outbound_check

    (result,) = _outbound_check("dev", settings(relay=RELAY), "example.com", None)(Target(host=HOST, domain="x"))
    assert result.status is Status.ERROR and "mailstack:outbound_probe" in result.remedy
