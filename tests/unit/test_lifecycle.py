"""Lifecycle gates: every refusal has its reason; provision (the rollback) is always allowed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mailstack.migration.evidence import (
    Evidence, MailboxSync, OldServerCheck, OutboundProof, Rollback, Verification,
)
from mailstack.migration.lifecycle import cutover_gate, decommission_gate, next_step, phase_gate
from mailstack.stack.settings import settings_from_values
from tests.conftest import RELAY, RELAYED, stack_values

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
HOST = "mail.example.com"
IP = "203.0.113.25"
ROSTER = ("alice@example.com", "bob@example.com", "carol@example.com")


def synced(at, differences=0, *, in_sync=True, partial=None, only=ROSTER) -> dict:
    """Every mailbox of ``only`` synced at ``at``."""
    return {a: MailboxSync(at=at, differences=differences, in_sync=in_sync, partial=partial) for a in only}


def watched(at, newest=None, *, only=ROSTER) -> dict:
    return {a: OldServerCheck(at=at, newest=newest) for a in only}


def settings(**overrides):
    """The test stack, relaying outgoing mail through :data:`RELAY` unless ``overrides`` say otherwise."""
    return settings_from_values(stack_values("r.csv", **{"relay": RELAY, **overrides}), source="t")


def ready_for_cutover(**changes) -> Evidence:
    evidence = Evidence(
        verification=Verification(at=NOW - timedelta(hours=2), host_name=HOST, host_ip=IP,
                                  certificate_sha256="ab" * 32, checks=["ports", "tls", "delivery"],
                                  mailboxes=list(ROSTER), outbound=OutboundProof(**RELAYED)),
        previous_mx_ttl=86400,
        lowered_ttl_seen_at=NOW - timedelta(hours=25),
    )
    return evidence.model_copy(update=changes)


def ready_for_decommission(**changes) -> Evidence:
    evidence = ready_for_cutover(
        new_mx_first_seen_at=NOW - timedelta(days=15),
        old_server_last_mail_at=NOW - timedelta(days=4),
        synced=synced(NOW - timedelta(days=1)),
        old_server_checked=watched(NOW - timedelta(hours=2)),
        backup_at=NOW - timedelta(days=20),
    )
    return evidence.model_copy(update=changes)


def cutover(evidence, *, ip=IP, **overrides):
    return cutover_gate(settings(**overrides), evidence, NOW, host_name=HOST, host_ip=ip, roster=ROSTER)


def decommission(evidence, **overrides):
    return decommission_gate(settings(**overrides), evidence, NOW, roster=ROSTER)


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
    assert decommission(ready_for_decommission()).allowed


def test_decommission_before_the_overlap_ends_is_refused():
    decision = decommission(ready_for_decommission(new_mx_first_seen_at=NOW - timedelta(days=10, hours=3)))
    assert decision.reasons == ("the overlap period (14 days, mailstack:overlap_days) has 3 days 21 h left",)


def test_decommission_without_the_new_mx_seen_is_refused():
    decision = decommission(ready_for_decommission(new_mx_first_seen_at=None))
    assert decision.reasons[0].startswith("the new MX has not been seen served yet")


def test_decommission_while_mail_still_reaches_the_old_server_is_refused():
    decision = decommission(ready_for_decommission(old_server_last_mail_at=NOW - timedelta(hours=30)))
    assert "mail reached the old server 30.0 h ago; it must be quiet for 3 days (mailstack:quiet_days)" in decision.reasons[0]


def test_decommission_without_a_final_sync_is_refused():
    decision = decommission(ready_for_decommission(synced={}))
    assert decision.reasons == ("no final sync recorded: run mailstack sync -s ENV --accounts FILE after the overlap, "
                                "with a row for each of the 3 roster mailboxes",)


def test_decommission_after_a_sync_with_differences_is_refused():
    decision = decommission(ready_for_decommission(synced=synced(NOW, 3)))
    assert decision.reasons == ("the last sync of alice@example.com (3 differences), bob@example.com (3 differences), "
                                "carol@example.com (3 differences) still found work: sync again until it finds none",)


def test_decommission_when_mail_arrived_after_the_final_sync_is_refused():
    evidence = ready_for_decommission(synced=synced(NOW - timedelta(days=5)))
    assert decommission(evidence).reasons == (
        "mail reached the old server after the last sync of alice@example.com, bob@example.com, carol@example.com: "
        "sync again",)


def test_decommission_after_a_sync_from_before_the_cutover_is_refused():
    evidence = ready_for_decommission(synced=synced(NOW - timedelta(days=20)), old_server_last_mail_at=None)
    assert decommission(evidence).reasons == (
        "the last sync of alice@example.com, bob@example.com, carol@example.com ran before the new MX was served: "
        "sync again now",)


def test_decommission_after_a_sync_that_left_a_roster_mailbox_out_is_refused_naming_it():
    evidence = ready_for_decommission(synced=synced(NOW - timedelta(days=1), only=ROSTER[:1]))
    assert decommission(evidence).reasons == (
        "no sync covered 2 roster mailbox(es): bob@example.com, carol@example.com: run mailstack sync -s ENV "
        "--accounts FILE with a row for each, or list them in mailstack:exempt_mailboxes with a reason",)


def test_partial_runs_add_up_to_a_final_sync_of_the_whole_roster():
    shards = {**synced(NOW - timedelta(days=1), only=ROSTER[:1]), **synced(NOW - timedelta(hours=3), only=ROSTER[1:])}
    assert decommission(ready_for_decommission(synced=shards)).allowed


def test_a_sync_of_some_folders_or_recent_mail_only_is_not_a_final_sync():
    evidence = ready_for_decommission(synced=synced(NOW - timedelta(days=1), partial="--include INBOX", only=ROSTER[:1])
                                      | synced(NOW - timedelta(days=1), only=ROSTER[1:]))
    assert decommission(evidence).reasons == (
        "the last sync of alice@example.com (--include INBOX) left folders or messages out: sync them again without "
        "--include, --since or --max-age",)


def test_a_mailbox_the_sync_could_not_bring_in_sync_blocks_decommission():
    evidence = ready_for_decommission(synced=synced(NOW - timedelta(days=1), only=ROSTER[:2])
                                      | synced(NOW - timedelta(days=1), 1, in_sync=False, only=ROSTER[2:]))
    assert decommission(evidence).reasons == (
        "the last sync of carol@example.com (not in sync) still found work: sync again until it finds none",)


def test_exempt_mailboxes_need_no_sync_and_no_watch():
    evidence = ready_for_decommission(synced=synced(NOW - timedelta(days=1), only=ROSTER[:2]),
                                      old_server_checked=watched(NOW - timedelta(hours=2), only=ROSTER[:2]))
    assert not decommission(evidence).allowed
    assert decommission(evidence, exempt_mailboxes={"carol@example.com": "created new on the new host"}).allowed


def test_a_quiet_period_never_measured_is_not_quiet():
    decision = decommission(ready_for_decommission(old_server_last_mail_at=None, old_server_checked={}))
    assert decision.reasons == (
        "the old server was never checked for new mail in 3 roster mailbox(es): alice@example.com, bob@example.com, "
        "carol@example.com: a quiet period never measured is not quiet; run mailstack status -s ENV --record "
        "--accounts FILE with a row for each",)


def test_a_quiet_period_measured_on_some_mailboxes_only_is_not_quiet():
    decision = decommission(ready_for_decommission(old_server_checked=watched(NOW, only=ROSTER[1:])))
    assert decision.reasons[0].startswith("the old server was never checked for new mail in 1 roster mailbox(es): "
                                          "alice@example.com:")


def test_the_quiet_period_counts_only_up_to_the_last_check():
    # Last mail 4 days ago, but the last look at the old server was 3.5 days ago: seen quiet for 12 h only.
    decision = decommission(ready_for_decommission(old_server_checked=watched(NOW - timedelta(days=3, hours=12))))
    assert decision.reasons == (
        "the old server was last seen quiet for 12.0 h (checked 2026-11-20 00:00 UTC); it must be seen quiet for "
        "3 days (mailstack:quiet_days): run mailstack status -s ENV --record --accounts FILE again later",)


def test_no_mail_at_all_since_the_cutover_is_quiet_once_measured_long_enough():
    evidence = ready_for_decommission(old_server_last_mail_at=None)
    assert decommission(evidence).allowed


def test_cutover_with_a_verification_that_compared_no_mailbox_is_refused_naming_what_to_run():
    unchecked = ready_for_cutover().verification.model_copy(update={"mailboxes": []})
    assert cutover(ready_for_cutover(verification=unchecked)).reasons == (
        "the verification compared no mail of 3 roster mailbox(es) with the old server: alice@example.com, "
        "bob@example.com, carol@example.com: run mailstack verify -s ENV --record --accounts FILE with a row for "
        "each (the sync's accounts file), or list them in mailstack:exempt_mailboxes with a reason",)


def test_cutover_with_a_verification_of_part_of_the_roster_is_refused():
    partial = ready_for_cutover().verification.model_copy(update={"mailboxes": ["alice@example.com"]})
    reasons = cutover(ready_for_cutover(verification=partial)).reasons
    assert len(reasons) == 1 and "compared no mail of 2 roster mailbox(es) with the old server: bob@example.com, " \
                                 "carol@example.com:" in reasons[0]
    assert cutover(ready_for_cutover(verification=partial),
                   exempt_mailboxes={"bob@example.com": "new hire", "carol@example.com": "left"}).allowed


def test_decommission_without_a_backup_is_refused():
    decision = decommission(ready_for_decommission(backup_at=None))
    assert decision.reasons == ("no backup of the old server recorded: run mailstack backup",)


def test_decommission_without_any_evidence_lists_every_reason():
    assert len(decommission(None).reasons) == 4  # new MX, never watched, no sync, no backup


@pytest.mark.parametrize("evidence", [None, Evidence()])
def test_provision_is_always_allowed_so_rollback_always_works(evidence):
    assert phase_gate(settings(phase="provision"), evidence, NOW, host_name=HOST, host_ip=IP, roster=ROSTER).allowed


def test_next_step_names_the_commands_of_the_phase():
    assert "mailstack verify -s prod --record" in next_step(settings(), "prod")
    assert "mailstack:phase to decommission" in next_step(settings(phase="cutover"), "prod")


def test_after_a_rollback_the_next_step_is_the_reverse_sync():
    rolled_back = Evidence(rollback=Rollback(at=NOW, cutover_at=NOW - timedelta(days=1)))
    step = next_step(settings(), "prod", rolled_back)
    assert "mailstack sync -s prod --reverse --accounts FILE" in step and "mail.example.com" in step
    assert "--reverse" not in next_step(settings(), "prod", Evidence())
