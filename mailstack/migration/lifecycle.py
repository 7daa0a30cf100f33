"""The migration lifecycle: which phase may be applied now, and what to run next.

The gates are pure: (settings, evidence, now, current host) -> Decision. The
Pulumi program only calls them and stops with their reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailstack.migration.evidence import Evidence
from mailstack.stack.settings import Settings

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


def next_step(settings: Settings, env: str) -> str:
    """One sentence telling the operator what to do after this phase's ``pulumi up``."""
    return _NEXT[settings.phase].format(env=env, old=settings.old_server.host, days=settings.overlap_days)


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
                 host_ip: str | None) -> Decision:
    """May the MX flip to the new host now?

    Only with verification evidence that is fresh and about this very host,
    and once the lowered MX TTL has been served for at least the old TTL, so
    that no resolver still caches the old MX for longer than the cutover TTL.
    ``host_ip`` is the host's current address, None when it has none yet.
    """
    reasons = []
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


def decommission_gate(settings: Settings, evidence: Evidence | None, now: datetime) -> Decision:
    """May the old server leave DNS (and, in AWS, be torn down) now?

    Only after the overlap period since the new MX was first served, with no
    mail reaching the old server for the quiet days, a final sync that found
    no difference, and a backup.
    """
    evidence = evidence or Evidence()
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
    last_mail = evidence.old_server_last_mail_at
    if last_mail is not None and _age(now, last_mail) < timedelta(days=settings.quiet_days):
        reasons.append(f"mail reached the old server {_hours(_age(now, last_mail))} ago; it must be quiet for "
                       f"{settings.quiet_days} days (mailstack:quiet_days): sync it and wait")
    final = evidence.final_sync
    if final is None:
        reasons.append("no final sync recorded: run mailstack sync -s ENV after the overlap")
    elif final.differences:
        reasons.append(f"the last sync found {final.differences} differences: sync again until it finds none")
    elif first_seen is not None and final.at < first_seen:
        reasons.append("the last sync ran before the new MX was served: sync again now")
    elif last_mail is not None and final.at < last_mail:
        reasons.append("mail reached the old server after the last sync: sync again")
    if evidence.backup_at is None:
        reasons.append("no backup of the old server recorded: run mailstack backup")
    return Decision("decommission", tuple(reasons))


def phase_gate(settings: Settings, evidence: Evidence | None, now: datetime, *, host_name: str,
               host_ip: str | None) -> Decision:
    """The gate of the stack's phase; provision (also the rollback) is always allowed."""
    if settings.phase == "cutover":
        return cutover_gate(settings, evidence, now, host_name=host_name, host_ip=host_ip)
    if settings.phase == "decommission":
        return decommission_gate(settings, evidence, now)
    return Decision("provision")
