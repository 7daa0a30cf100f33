"""`mailstack status` through a whole simulated overlap: times injected, no sleeps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from mailstack.migration.evidence import Evidence, MailboxSync, OutboundProof, Verification
from mailstack.migration.lifecycle import cutover_gate
from mailstack.stack.settings import settings_from_values
from mailstack.migration.status import MailboxActivity, MxAnswer, assess, propagation
from tests.conftest import RELAY, RELAYED, stack_values

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)
NEW, OLD = "mail.example.com", "mail.example.net"
SETTINGS = settings_from_values(stack_values("r.csv", relay=RELAY), source="t")
ROSTER = ("taro@example.com", "hanako@example.com")


def auth(host: str, ttl: int, *servers: str) -> list[MxAnswer]:
    return [MxAnswer(f"{s} (127.0.5.{n})", True, (host,), ttl) for n, s in enumerate(servers or ("ns1", "ns2"))]


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def test_a_whole_migration_moves_the_evidence_and_the_gates():
    # Before the first `pulumi up`: the old MX with its long TTL.
    r = assess(SETTINGS, None, auth(OLD, 86400), [], day(0), roster=ROSTER)
    assert r.evidence.previous_mx_ttl == 86400 and r.evidence.lowered_ttl_seen_at is None
    assert r.propagation == "old"

    # Provision applied: the lowered TTL is served by every authoritative server.
    r = assess(SETTINGS, r.evidence, auth(OLD, 300), [], day(0.1), roster=ROSTER)
    assert r.evidence.lowered_ttl_seen_at == day(0.1)
    verified = r.evidence.model_copy(update={"verification": Verification(
        at=day(1.1), host_name=NEW, host_ip="203.0.113.25", certificate_sha256="ab" * 32, checks=["all"],
        mailboxes=list(ROSTER), outbound=OutboundProof(**RELAYED))})
    assert not cutover_gate(SETTINGS, verified, day(0.5), host_name=NEW, host_ip="203.0.113.25", roster=ROSTER).allowed
    assert cutover_gate(SETTINGS, verified, day(1.2), host_name=NEW, host_ip="203.0.113.25", roster=ROSTER).allowed

    # Cutover applied: one server still serves the old MX, a resolver caches it.
    answers = [MxAnswer("ns1 (127.0.5.0)", True, (NEW,), 300), MxAnswer("ns2 (127.0.5.1)", True, (OLD,), 300),
               MxAnswer("127.0.5.9", False, (OLD,), 120)]
    r = assess(SETTINGS, verified, answers, [], day(2), roster=ROSTER)
    assert r.propagation == "mixed" and r.evidence.new_mx_first_seen_at is None

    # Every authoritative server serves the new MX: the overlap clock starts.
    r = assess(SETTINGS, r.evidence, auth(NEW, 300), [], day(2.1), roster=ROSTER)
    assert r.evidence.new_mx_first_seen_at == day(2.1) and r.overlap_left == timedelta(days=14)

    # A straggler reaches the old server on day 3: a final sync is needed.
    r = assess(SETTINGS, r.evidence, auth(NEW, 300), [MailboxActivity("taro", day(3), 1, mailbox="taro@example.com"), MailboxActivity("hanako", mailbox="hanako@example.com")], day(3.5), roster=ROSTER)
    assert r.evidence.old_server_last_mail_at == day(3) and r.final_sync_needed
    assert not r.decommission.allowed

    # Day 10: still inside the overlap.
    r = assess(SETTINGS, r.evidence, auth(NEW, 300), [MailboxActivity("taro")], day(10), roster=ROSTER)
    assert any("overlap period (14 days" in reason for reason in r.decommission.reasons)

    # Day 16.2: overlap over, quiet since day 3, final sync clean, backup taken: decommission allowed.
    clean = {a: MailboxSync(at=day(16), differences=0, in_sync=True) for a in ROSTER}
    done = r.evidence.model_copy(update={"synced": clean, "backup_at": day(0)})
    watch = [MailboxActivity("taro", mailbox="taro@example.com"), MailboxActivity("hanako", mailbox="hanako@example.com")]
    r = assess(SETTINGS, done, auth(NEW, 300), watch, day(16.2), roster=ROSTER)
    assert r.decommission.allowed and not r.final_sync_needed and r.overlap_left == timedelta(0)


def test_ttl_lowered_before_status_first_looked_assumes_a_day():
    r = assess(SETTINGS, None, auth(OLD, 300), [], day(0), roster=ROSTER)
    assert r.evidence.previous_mx_ttl == 86400
    assert r.notes == ["the MX TTL was already lowered when status first looked: assuming it was 86400 s before"]


def test_a_rollback_resets_the_overlap_clock():
    flipped = Evidence(new_mx_first_seen_at=day(2))
    r = assess(SETTINGS, flipped, auth(OLD, 300), [], day(3), roster=ROSTER)
    assert r.evidence.new_mx_first_seen_at is None and r.overlap_left is None
    assert "rollback" in r.notes[-1]


def test_a_rollback_is_recorded_and_every_mailbox_waits_for_its_reverse_sync():
    r = assess(SETTINGS, Evidence(new_mx_first_seen_at=day(2)), auth(OLD, 300), [], day(3), roster=ROSTER)
    assert (r.evidence.rollback.at, r.evidence.rollback.cutover_at) == (day(3), day(2))
    assert r.reverse_sync_pending == sorted(ROSTER)
    back = r.evidence.model_copy(update={"reverse_synced": {
        "taro@example.com": MailboxSync(at=day(3.1), differences=4, in_sync=True)}})
    r = assess(SETTINGS, back, auth(OLD, 300), [], day(3.2), roster=ROSTER)
    assert r.reverse_sync_pending == ["hanako@example.com"]
    r = assess(SETTINGS, r.evidence, auth(NEW, 300), [], day(5), roster=ROSTER)  # cut over again
    assert r.evidence.rollback is None and r.reverse_sync_pending == []


def test_a_mailbox_read_on_the_old_server_is_recorded_as_checked_now():
    seen = [MailboxActivity("taro", day(3), 1, mailbox="Taro@example.com"), MailboxActivity("hanako", error="refused",
                                                                                            mailbox="hanako@example.com")]
    r = assess(SETTINGS, Evidence(new_mx_first_seen_at=day(2)), auth(NEW, 300), seen, day(4), roster=ROSTER)
    assert set(r.evidence.old_server_checked) == {"taro@example.com"}
    assert r.evidence.old_server_checked["taro@example.com"].at == day(4)


def test_an_unanswering_authoritative_server_records_nothing():
    answers = auth(NEW, 300, "ns1") + [MxAnswer("ns2 (127.0.5.1)", True, error="timed out")]
    r = assess(SETTINGS, Evidence(), answers, [], day(2), roster=ROSTER)
    assert r.evidence.new_mx_first_seen_at is None and r.evidence.lowered_ttl_seen_at is None


def test_newest_old_mail_only_moves_forward():
    r = assess(SETTINGS, Evidence(old_server_last_mail_at=day(5)), [], [MailboxActivity("taro", day(4), 1)], day(6), roster=ROSTER)
    assert r.evidence.old_server_last_mail_at == day(5)


def test_propagation_words():
    assert propagation([], NEW, OLD) == "unknown"
    assert propagation(auth(NEW, 300) + [MxAnswer("r", False, (OLD,), 10)], NEW, OLD) == "mixed"
