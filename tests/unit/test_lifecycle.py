"""Lifecycle gates: every refusal has its reason; provision (the rollback) is always allowed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mailstack.migration.evidence import Evidence, FinalSync, Verification
from mailstack.migration.lifecycle import cutover_gate, decommission_gate, next_step, phase_gate
from mailstack.stack.settings import settings_from_values
from tests.conftest import stack_values

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
HOST = "mail.example.com"
IP = "203.0.113.25"


def settings(**overrides):
    return settings_from_values(stack_values("r.csv", **overrides), source="t")


def ready_for_cutover(**changes) -> Evidence:
    evidence = Evidence(
        verification=Verification(at=NOW - timedelta(hours=2), host_name=HOST, host_ip=IP,
                                  certificate_sha256="ab" * 32, checks=["ports", "tls", "delivery"]),
        previous_mx_ttl=86400,
        lowered_ttl_seen_at=NOW - timedelta(hours=25),
    )
    return evidence.model_copy(update=changes)


def ready_for_decommission(**changes) -> Evidence:
    evidence = ready_for_cutover(
        new_mx_first_seen_at=NOW - timedelta(days=15),
        old_server_last_mail_at=NOW - timedelta(days=4),
        final_sync=FinalSync(at=NOW - timedelta(days=1), differences=0),
        backup_at=NOW - timedelta(days=20),
    )
    return evidence.model_copy(update=changes)


def cutover(evidence, *, ip=IP, **overrides):
    return cutover_gate(settings(**overrides), evidence, NOW, host_name=HOST, host_ip=ip)


def test_cutover_is_allowed_with_fresh_matching_evidence_and_a_long_enough_lowered_ttl():
    decision = cutover(ready_for_cutover())
    assert decision.allowed and decision.reasons == ()


def test_cutover_without_evidence_is_refused_with_what_to_run():
    decision = cutover(None)
    assert not decision.allowed
    assert decision.reasons[0] == f"no verification evidence: run mailstack verify -s ENV --record against {HOST} first"
    assert "the lowered MX TTL (300 s) has not been seen served yet" in decision.reasons[1]


def test_cutover_with_stale_evidence_is_refused():
    decision = cutover(ready_for_cutover(verification=ready_for_cutover().verification.model_copy(
        update={"at": NOW - timedelta(hours=30)})))
    assert decision.reasons == ("the verification is 30.0 h old (limit 24 h, mailstack:evidence_max_age_hours): verify again",)


def test_evidence_age_limit_is_a_setting():
    old = ready_for_cutover(verification=ready_for_cutover().verification.model_copy(update={"at": NOW - timedelta(hours=30)}))
    assert cutover(old, evidence_max_age_hours=48).allowed


def test_cutover_with_evidence_of_another_host_name_is_refused():
    other = ready_for_cutover().verification.model_copy(update={"host_name": "mail2.example.com"})
    assert cutover(ready_for_cutover(verification=other)).reasons == (
        f"the verification is of mail2.example.com, not of the current host {HOST}",)


def test_cutover_with_evidence_of_another_address_is_refused():
    decision = cutover(ready_for_cutover(), ip="198.51.100.7")
    assert decision.reasons == (f"the verification is of {IP}, not of the current host address 198.51.100.7: "
                                "the host changed since, verify again",)


def test_cutover_before_the_host_has_an_address_is_refused():
    assert cutover(ready_for_cutover(), ip=None).reasons == (f"{HOST} has no address yet: apply the provision phase first",)


def test_cutover_before_the_old_ttl_has_expired_is_refused_with_the_wait():
    decision = cutover(ready_for_cutover(lowered_ttl_seen_at=NOW - timedelta(hours=6)))
    assert decision.reasons == ("the lowered MX TTL has been served for 6.0 h; resolvers may cache the old MX for "
                                "up to 24.0 h (its previous TTL): wait 18.0 h more",)


def test_decommission_is_allowed_once_every_condition_holds():
    assert decommission_gate(settings(), ready_for_decommission(), NOW).allowed


def test_decommission_before_the_overlap_ends_is_refused():
    decision = decommission_gate(settings(), ready_for_decommission(new_mx_first_seen_at=NOW - timedelta(days=10, hours=3)), NOW)
    assert decision.reasons == ("the overlap period (14 days, mailstack:overlap_days) has 3 days 21 h left",)


def test_decommission_without_the_new_mx_seen_is_refused():
    decision = decommission_gate(settings(), ready_for_decommission(new_mx_first_seen_at=None), NOW)
    assert decision.reasons[0].startswith("the new MX has not been seen served yet")


def test_decommission_while_mail_still_reaches_the_old_server_is_refused():
    decision = decommission_gate(settings(), ready_for_decommission(old_server_last_mail_at=NOW - timedelta(hours=30)), NOW)
    assert "mail reached the old server 30.0 h ago; it must be quiet for 3 days (mailstack:quiet_days)" in decision.reasons[0]


def test_decommission_without_a_final_sync_is_refused():
    decision = decommission_gate(settings(), ready_for_decommission(final_sync=None), NOW)
    assert decision.reasons == ("no final sync recorded: run mailstack sync -s ENV after the overlap",)


def test_decommission_after_a_sync_with_differences_is_refused():
    decision = decommission_gate(settings(), ready_for_decommission(final_sync=FinalSync(at=NOW, differences=3)), NOW)
    assert decision.reasons == ("the last sync found 3 differences: sync again until it finds none",)


def test_decommission_when_mail_arrived_after_the_final_sync_is_refused():
    evidence = ready_for_decommission(final_sync=FinalSync(at=NOW - timedelta(days=5), differences=0))
    assert decommission_gate(settings(), evidence, NOW).reasons == ("mail reached the old server after the last sync: sync again",)


def test_decommission_after_a_sync_from_before_the_cutover_is_refused():
    evidence = ready_for_decommission(final_sync=FinalSync(at=NOW - timedelta(days=20), differences=0),
                                      old_server_last_mail_at=None)
    assert decommission_gate(settings(), evidence, NOW).reasons == (
        "the last sync ran before the new MX was served: sync again now",)


def test_decommission_without_a_backup_is_refused():
    decision = decommission_gate(settings(), ready_for_decommission(backup_at=None), NOW)
    assert decision.reasons == ("no backup of the old server recorded: run mailstack backup",)


def test_decommission_without_any_evidence_lists_every_reason():
    assert len(decommission_gate(settings(), None, NOW).reasons) == 3


@pytest.mark.parametrize("evidence", [None, Evidence()])
def test_provision_is_always_allowed_so_rollback_always_works(evidence):
    assert phase_gate(settings(phase="provision"), evidence, NOW, host_name=HOST, host_ip=IP).allowed


def test_next_step_names_the_commands_of_the_phase():
    assert "mailstack verify -s prod --record" in next_step(settings(), "prod")
    assert "mailstack:phase to decommission" in next_step(settings(phase="cutover"), "prod")
