"""The migration lifecycle: which phase may be applied now, and what to run next.

The gates are pure: (settings, evidence, now, current host) -> Decision. The
Pulumi program only calls them and stops with their reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Collection

from mailstack.migration.evidence import Evidence, mailbox_syncs
from mailstack.stack.settings import Settings

SHOWN = 5  # mailboxes named in a refusal; the rest are counted

_NEXT = {
    "provision": (
        "back up and copy the mailboxes (mailstack backup; mailstack sync -s {env}), "
        "then prove the new host works (mailstack verify -s {env} --record) "
        "and set mailstack:phase to cutover"
    ),
    "cutover": (
        "watch propagation and keep syncing stragglers from {old} "
        "(mailstack status -s {env} --record; mailstack sync -s {env}) for {days} days, "
        "then set mailstack:phase to decommission"
    ),
    "decommission": "the old server {old} is out of DNS; cancel its hosting once nothing reaches it",
}


_AFTER_ROLLBACK = (
    "copy the mail that reached {new} during the cutover back to {old} "
    "(mailstack sync -s {env} --reverse --accounts FILE), then find the cause before the next cutover"
)


def next_step(settings: Settings, env: str, evidence: Evidence | None = None) -> str:
    """One sentence telling the operator what to do after this phase's ``pulumi up``.

    In provision after a rollback (status saw the MX return to the old server),
    the next step is the reverse sync: mail delivered to the new host during
    the cutover would otherwise stay there.
    """
    if settings.phase == "provision" and evidence is not None and evidence.rollback is not None:
        return _AFTER_ROLLBACK.format(env=env, new=settings.host.name, old=settings.old_server.host)
    step = _NEXT[settings.phase].format(env=env, old=settings.old_server.host, days=settings.overlap_days)
    if settings.phase == "provision" and settings.outbound is None:
        # The cutover gate will refuse: say so now, while the mailboxes are still being copied.
        step = ("declare how mail leaves the host (mailstack:ses, mailstack:relay or mailstack:port25_lifted; "
                "EC2 blocks outbound port 25), " + step)
    return step


def guarded_mailboxes(settings: Settings, roster: Collection[str]) -> list[str]:
    """The roster addresses a gate requires evidence for: every one but the stack's exempt mailboxes."""
    exempt = {a.lower() for a in settings.exempt_mailboxes}
    return sorted({a.lower() for a in roster} - exempt)


def name_some(addresses: Collection[str]) -> str:
    """``a, b, c and 4 more``: a refusal names a few mailboxes and counts the rest."""
    listed = sorted(addresses)
    shown = ", ".join(listed[:SHOWN])
    return shown + (f" and {len(listed) - SHOWN} more" if len(listed) > SHOWN else "")


@dataclass(frozen=True)
class Decision:
    """Whether a phase may be applied, and every reason it may not."""

    phase: str
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def allowed(self) -> bool:
        return not self.reasons


def _age(now: datetime, then: datetime) -> timedelta:
    return now - then


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


def cutover_gate(settings: Settings, evidence: Evidence | None, now: datetime, *, host_name: str,
                 host_ip: str | None, roster: Collection[str]) -> Decision:
    """May the MX flip to the new host now?

    Only with verification evidence that is fresh, about this very host, and
    whose mailbox comparison covered every roster mailbox (but the exempt
    ones); with a way out for mail declared (a relay, SES, or the port-25
    lift) and the verification's probe seen leaving by it; and once the lowered MX TTL has been served for at least the old
    TTL, so that no resolver still caches the old MX for longer than the
    cutover TTL. ``host_ip`` is the host's current address, None when it has
    none yet; ``roster`` the roster's addresses.
    """
    reasons = []
    if settings.outbound is None:
        reasons.append(NO_OUTBOUND)
    verification = evidence.verification if evidence else None
    if verification is None:
        reasons.append(f"no verification evidence: run mailstack verify -s ENV --record against {host_name} first")
    else:
        age = _age(now, verification.at)
        limit = timedelta(hours=settings.evidence_max_age_hours)
        if age > limit:
            reasons.append(f"the verification is {_hours(age)} old (limit {settings.evidence_max_age_hours} h, "
                           "mailstack:evidence_max_age_hours): verify again")
        if verification.host_name != host_name:
            reasons.append(f"the verification is of {verification.host_name}, not of the current host {host_name}")
        if host_ip is None:
            reasons.append(f"{host_name} has no address yet: apply the provision phase first")
        elif verification.host_ip != host_ip:
            reasons.append(f"the verification is of {verification.host_ip}, not of the current host address {host_ip}: "
                           "the host changed since, verify again")
        reasons += _outbound_proof_reasons(settings, verification)
        compared = {a.lower() for a in verification.mailboxes}
        missing = [a for a in guarded_mailboxes(settings, roster) if a not in compared]
        if missing:
            reasons.append(f"the verification compared no mail of {len(missing)} roster mailbox(es) with the old "
                           f"server: {name_some(missing)}: run mailstack verify -s ENV --record --accounts FILE with "
                           "a row for each (the sync's accounts file), or list them in mailstack:exempt_mailboxes "
                           "with a reason")
    if evidence is None or evidence.lowered_ttl_seen_at is None or evidence.previous_mx_ttl is None:
        reasons.append(f"the lowered MX TTL ({settings.cutover_ttl} s) has not been seen served yet: "
                       "apply the provision phase and run mailstack status -s ENV --record")
    else:
        waited = _age(now, evidence.lowered_ttl_seen_at)
        needed = timedelta(seconds=evidence.previous_mx_ttl)
        if waited < needed:
            reasons.append(f"the lowered MX TTL has been served for {_hours(waited)}; resolvers may cache the old MX "
                           f"for up to {_hours(needed)} (its previous TTL): wait {_hours(needed - waited)} more")
    return Decision("cutover", tuple(reasons))


NO_OUTBOUND = (
    "the stack declares no way for mail to leave the host (EC2 blocks outbound port 25 unless AWS lifts it): "
    "declare a relay (mailstack:ses for Amazon SES, or mailstack:relay with the secret mailstack:relay_password), "
    "or record AWS's lift of the port-25 block (mailstack:port25_lifted: {lifted_on: YYYY-MM-DD, case: CASE-ID}); "
    "then run mailstack verify -s ENV --record"
)


def _outbound_proof_reasons(settings: Settings, verification) -> list[str]:
    """The recorded verification saw mail leave the host by the way the stack declares now."""
    route = settings.outbound
    if route is None:
        return []  # NO_OUTBOUND already says what to do
    proof = verification.outbound
    if proof is None:
        return [f"the verification did not see mail leave the host ({route.summary}): run mailstack verify -s ENV "
                "--record, whose outbound check sends a probe out and reads the delivery report back"]
    if (proof.route, proof.summary) != (route.kind, route.summary):
        return [f"the verification saw mail leave by {proof.summary}, but the stack now declares {route.summary}: "
                "run mailstack verify -s ENV --record again"]
    return []


def outbound_status(settings: Settings, evidence: Evidence | None) -> str:
    """The stack's way out for mail, and whether the recorded verification saw a probe leave by it (for plans)."""
    route = settings.outbound
    if route is None:
        return "outgoing mail: " + NO_OUTBOUND
    proof = evidence.verification.outbound if evidence and evidence.verification else None
    dkim = ("; pulumi up also publishes each domain's three Easy DKIM CNAMEs (named by SES's tokens, known only "
            "then)" if route.kind == "ses" else "")
    if proof is not None and (proof.route, proof.summary) == (route.kind, route.summary):
        seen = (f"verified: a probe to {proof.probe} was {proof.action}"
                f"{f' by {proof.remote_mta}' if proof.remote_mta else ''}")
    else:
        seen = "not seen leaving yet (mailstack verify -s ENV --record sends the probe)"
    return f"outgoing mail: {route.summary}; {seen}{dkim}"


def decommission_gate(settings: Settings, evidence: Evidence | None, now: datetime, *,
                      roster: Collection[str]) -> Decision:
    """May the old server leave DNS (and, in AWS, be torn down) now?

    Only after the overlap period since the new MX was first served; with the
    old server measured quiet for ``quiet_days`` on every roster mailbox
    (never measured is not quiet); a final sync of every roster mailbox after
    the new MX was served and after the last mail on the old server, that
    found nothing left to do; and a backup. Exempt mailboxes
    (``mailstack:exempt_mailboxes``) need no sync and no watch.
    """
    evidence = evidence or Evidence()
    guarded = guarded_mailboxes(settings, roster)
    reasons = []
    first_seen = evidence.new_mx_first_seen_at
    if first_seen is None:
        reasons.append("the new MX has not been seen served yet: run mailstack status -s ENV --record after the cutover")
    else:
        overlap = timedelta(days=settings.overlap_days)
        if _age(now, first_seen) < overlap:
            left = overlap - _age(now, first_seen)
            reasons.append(f"the overlap period ({settings.overlap_days} days, mailstack:overlap_days) has "
                           f"{left.days} days {left.seconds // 3600} h left")
    reasons += _quiet_reasons(settings, evidence, guarded, now)
    reasons += _final_sync_reasons(evidence, guarded)
    if evidence.backup_at is None:
        reasons.append("no backup of the old server recorded: run mailstack backup")
    return Decision("decommission", tuple(reasons))


def _quiet_reasons(settings: Settings, evidence: Evidence, guarded: list[str], now: datetime) -> list[str]:
    """The old server quiet for ``quiet_days``, as measured on every guarded mailbox (never measured: not quiet)."""
    quiet = timedelta(days=settings.quiet_days)
    last_mail = evidence.old_server_last_mail_at
    if last_mail is not None and _age(now, last_mail) < quiet:
        return [f"mail reached the old server {_hours(_age(now, last_mail))} ago; it must be quiet for "
                f"{settings.quiet_days} days (mailstack:quiet_days): sync it and wait"]
    checked = evidence.old_server_checked
    unwatched = [a for a in guarded if a not in checked]
    if unwatched:
        return [f"the old server was never checked for new mail in {len(unwatched)} roster mailbox(es): "
                f"{name_some(unwatched)}: a quiet period never measured is not quiet; run mailstack status -s ENV "
                "--record --accounts FILE with a row for each"]
    if evidence.new_mx_first_seen_at is None or not guarded:
        return []
    measured_at = min(checked[a].at for a in guarded)
    quiet_since = max(t for t in (last_mail, evidence.new_mx_first_seen_at) if t is not None)
    if measured_at - quiet_since < quiet:
        return [f"the old server was last seen quiet for {_hours(max(timedelta(0), measured_at - quiet_since))} "
                f"(checked {measured_at:%Y-%m-%d %H:%M} UTC); it must be seen quiet for {settings.quiet_days} days "
                "(mailstack:quiet_days): run mailstack status -s ENV --record --accounts FILE again later"]
    return []


def sharded_sync_reasons(evidence: Evidence) -> list[str]:
    """A sync sharded over N machines counts only once every shard K/N of one count N has reported.

    The count that counts is the one of the latest shard report, unless an
    unsharded sync (of the whole accounts file) ran after it; shards of other
    counts never complete it, since their partitions do not fit together.
    """
    shards = evidence.sync_shards
    if not shards:
        return []
    latest = max(shards.values(), key=lambda s: s.at)
    if evidence.final_sync is not None and evidence.final_sync.at > latest.at:
        return []
    count = latest.count
    missing = [f"{k}/{count}" for k in range(1, count + 1) if f"{k}/{count}" not in shards]
    if not missing:
        return []
    shown = ", ".join(missing[:SHOWN]) + (f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else "")
    reason = (f"the sync sharded over {count} machines is incomplete: shard(s) {shown} have not reported: run "
              f"mailstack sync -s ENV --shard K/{count} --accounts FILE for each and add its file "
              f"stacks/evidence/ENV.sync-shard-K-of-{count}.json to the others")
    other = sorted((s for s in shards.values() if s.count != count), key=lambda s: (s.count, s.index))
    if other:
        reason += (f"; shards of another count ({', '.join(s.shard for s in other)}) do not complete it: their "
                   "partition of the accounts is not this one")
    return [reason]


def _final_sync_reasons(evidence: Evidence, guarded: list[str]) -> list[str]:
    """A sync of every guarded mailbox after the cutover and the last old-server mail, that found nothing to do.

    Unsharded runs and the shards of sharded ones add up per mailbox; a
    sharded sync whose shards have not all reported is refused as a whole.
    """
    synced = mailbox_syncs(evidence)
    shard_gaps = sharded_sync_reasons(evidence)
    if not synced and guarded:
        return [f"no final sync recorded: run mailstack sync -s ENV --accounts FILE after the overlap, with a row for "
                f"each of the {len(guarded)} roster mailboxes"] + shard_gaps
    first_seen, last_mail = evidence.new_mx_first_seen_at, evidence.old_server_last_mail_at
    missing, partial, differing, early, stale = [], [], [], [], []
    for address in guarded:
        run = synced.get(address)
        if run is None:
            missing.append(address)
        elif run.partial:
            partial.append(f"{address} ({run.partial})")
        elif run.differences or not run.in_sync:
            differing.append(f"{address} ({run.differences} differences)" if run.in_sync else f"{address} (not in sync)")
        elif first_seen is not None and run.at < first_seen:
            early.append(address)
        elif last_mail is not None and run.at < last_mail:
            stale.append(address)
    reasons = list(shard_gaps)
    if missing:
        reasons.append(f"no sync covered {len(missing)} roster mailbox(es): {name_some(missing)}: run mailstack sync "
                       "-s ENV --accounts FILE with a row for each, or list them in mailstack:exempt_mailboxes "
                       "with a reason")
    if partial:
        reasons.append(f"the last sync of {name_some(partial)} left folders or messages out: sync them again "
                       "without --include, --since or --max-age")
    if differing:
        reasons.append(f"the last sync of {name_some(differing)} still found work: sync again until it finds none")
    if early:
        reasons.append(f"the last sync of {name_some(early)} ran before the new MX was served: sync again now")
    if stale:
        reasons.append(f"mail reached the old server after the last sync of {name_some(stale)}: sync again")
    return reasons


def phase_gate(settings: Settings, evidence: Evidence | None, now: datetime, *, host_name: str,
               host_ip: str | None, roster: Collection[str]) -> Decision:
    """The gate of the stack's phase; provision (also the rollback) is always allowed."""
    if settings.phase == "cutover":
        return cutover_gate(settings, evidence, now, host_name=host_name, host_ip=host_ip, roster=roster)
    if settings.phase == "decommission":
        return decommission_gate(settings, evidence, now, roster=roster)
    return Decision("provision")
