"""Where the migration stands: MX propagation, mail still reaching the old server, the overlap clock.

``assess`` is pure: (settings, evidence, DNS answers, old-server activity, now)
-> updated evidence and a report. The shell functions below gather the
answers over DNS and IMAP.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Collection

import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from mailstack.checks.dns import lookup, resolver
from mailstack.migration.evidence import Evidence, OldServerCheck, Rollback, mailbox_syncs
from mailstack.imap import ImapError, NoSuchFolder
from mailstack.imap.wire import internaldate_epoch
from mailstack.migration.lifecycle import Decision, decommission_gate, guarded_mailboxes
from mailstack.stack.settings import Settings
from mailstack.imap.endpoint import Endpoint, login

ASSUMED_PREVIOUS_TTL = 86400  # when the TTL was lowered before status first looked: assume a day, the common maximum


@dataclass(frozen=True)
class MxAnswer:
    """The MX of the domain as one server serves it."""

    server: str
    authoritative: bool
    hosts: tuple[str, ...] = ()
    ttl: int | None = None
    error: str | None = None

    def points_to(self, host: str) -> bool:
        return bool(self.hosts) and all(h == host for h in self.hosts)


@dataclass(frozen=True)
class MailboxActivity:
    """Mail that reached one mailbox of the old server after the cutover."""

    account: str
    newest: datetime | None = None
    messages: int = 0
    error: str | None = None
    mailbox: str | None = None  # the roster address it was migrated to (the accounts file's target_user)


@dataclass
class StatusReport:
    phase: str
    answers: list[MxAnswer]
    propagation: str
    activity: list[MailboxActivity]
    evidence: Evidence
    overlap_left: timedelta | None
    final_sync_needed: bool
    decommission: Decision
    notes: list[str] = field(default_factory=list)
    reverse_sync_pending: list[str] = field(default_factory=list)  # after a rollback: mailboxes not copied back yet


def _state(answer: MxAnswer, new: str, old: str) -> str:
    if answer.error:
        return "no answer"
    if answer.points_to(new):
        return "new"
    if answer.points_to(old):
        return "old"
    return "other"


def propagation(answers: list[MxAnswer], new: str, old: str) -> str:
    """One word for the whole picture: old, mixed, new (or unknown)."""
    states = {_state(a, new, old) for a in answers if not a.error}
    if not states:
        return "unknown"
    if states == {"new"}:
        return "new"
    if states == {"old"}:
        return "old"
    return "mixed"


def assess(settings: Settings, evidence: Evidence | None, answers: list[MxAnswer],
           activity: list[MailboxActivity], now: datetime, *, roster: Collection[str]) -> StatusReport:
    """Fold what was measured into the evidence, and say where the migration stands.

    Each mailbox of ``activity`` read without error (and with its roster
    address) is recorded as checked now: the quiet period is measured on it.
    A rollback (the old MX served again after the new one) is recorded with
    the cutover's time, so that the mail that reached the new host meanwhile
    is copied back (``mailstack sync --reverse``).
    """
    evidence = evidence or Evidence()
    updates: dict = {}
    notes: list[str] = []
    new, old = settings.host.name, settings.old_server.host
    authoritative = [a for a in answers if a.authoritative and not a.error]
    complete = bool(authoritative) and len(authoritative) == len([a for a in answers if a.authoritative])
    if complete:
        ttls = [a.ttl for a in authoritative if a.ttl is not None]
        if evidence.previous_mx_ttl is None and any(t > settings.cutover_ttl for t in ttls):
            updates["previous_mx_ttl"] = max(ttls)
        if all(t <= settings.cutover_ttl for t in ttls) and evidence.lowered_ttl_seen_at is None:
            updates["lowered_ttl_seen_at"] = now
            if evidence.previous_mx_ttl is None and "previous_mx_ttl" not in updates:
                updates["previous_mx_ttl"] = ASSUMED_PREVIOUS_TTL
                notes.append(f"the MX TTL was already lowered when status first looked: assuming it was "
                             f"{ASSUMED_PREVIOUS_TTL} s before")
        if all(a.points_to(new) for a in authoritative):
            if evidence.new_mx_first_seen_at is None:
                updates["new_mx_first_seen_at"] = now
                updates["rollback"] = None  # cut over again: what reached the new host stays where the MX is
        elif all(a.points_to(old) for a in authoritative) and evidence.new_mx_first_seen_at is not None:
            # A rollback: the overlap clock starts again at the next flip.
            updates["new_mx_first_seen_at"] = None
            updates["rollback"] = Rollback(at=now, cutover_at=evidence.new_mx_first_seen_at)
            notes.append("the MX points at the old server again (rollback): the overlap clock is reset; copy the mail "
                         "that reached the new host back with mailstack sync -s ENV --reverse")
    newest = [a.newest for a in activity if a.newest is not None]
    if newest:
        latest = max(newest)
        if evidence.old_server_last_mail_at is None or latest > evidence.old_server_last_mail_at:
            updates["old_server_last_mail_at"] = latest
    checked = {a.mailbox.lower(): OldServerCheck(at=now, newest=a.newest) for a in activity
               if a.mailbox and not a.error}
    if checked:
        updates["old_server_checked"] = {**evidence.old_server_checked, **checked}
    evidence = Evidence.model_validate({**evidence.model_dump(), **updates})

    overlap_left = None
    if evidence.new_mx_first_seen_at is not None:
        overlap_left = max(timedelta(0), evidence.new_mx_first_seen_at + timedelta(days=settings.overlap_days) - now)
    guarded = guarded_mailboxes(settings, roster)
    last_mail = evidence.old_server_last_mail_at
    synced = mailbox_syncs(evidence)
    final_sync_needed = last_mail is not None and any(a not in synced or synced[a].at < last_mail for a in guarded)
    return StatusReport(
        phase=settings.phase,
        answers=answers,
        propagation=propagation(answers, new, old),
        activity=activity,
        evidence=evidence,
        overlap_left=overlap_left,
        final_sync_needed=final_sync_needed,
        decommission=decommission_gate(settings, evidence, now, roster=roster),
        notes=notes,
        reverse_sync_pending=reverse_sync_pending(evidence, guarded),
    )


def reverse_sync_pending(evidence: Evidence, mailboxes: list[str]) -> list[str]:
    """After a rollback: the mailboxes with no reverse sync since it that ended in sync."""
    if evidence.rollback is None:
        return []
    done = evidence.reverse_synced
    return [a for a in mailboxes if a not in done or done[a].at < evidence.rollback.at or not done[a].in_sync]


# ------------------------------------------------------------------ shells (I/O)


def _mx_hosts(rrset) -> tuple[str, ...]:
    return tuple(sorted(r.exchange.to_text().rstrip(".") for r in rrset))


def authoritative_answers(zone: str, domain: str, dns_server: str | None) -> list[MxAnswer]:
    """The MX of ``domain`` asked of every authoritative server of ``zone`` directly."""
    res = resolver(dns_server)
    answers = []
    for ns in sorted(n.rstrip(".") for n in lookup(res, zone, "NS")):
        for ip in lookup(res, ns, "A") or [None]:
            label = f"{ns} ({ip})" if ip else ns
            if ip is None:
                answers.append(MxAnswer(label, True, error="no address"))
                continue
            try:
                reply = dns.query.udp(dns.message.make_query(domain, dns.rdatatype.MX), ip, timeout=3)
                rrset = reply.find_rrset(reply.answer, dns.name.from_text(domain), dns.rdataclass.IN, dns.rdatatype.MX)
                answers.append(MxAnswer(label, True, _mx_hosts(rrset), rrset.ttl))
            except (KeyError, dns.exception.DNSException, OSError) as exc:
                answers.append(MxAnswer(label, True, error=str(exc) or type(exc).__name__))
    return answers


def resolver_answers(domain: str, resolvers: list[str]) -> list[MxAnswer]:
    """The MX of ``domain`` as each resolver (``IP[:PORT]``) serves it, with the TTL left in its cache."""
    answers = []
    for server in resolvers:
        try:
            answer = resolver(server).resolve(domain, "MX")
            answers.append(MxAnswer(server, False, _mx_hosts(answer.rrset), answer.rrset.ttl))
        except dns.exception.DNSException as exc:
            answers.append(MxAnswer(server, False, error=str(exc) or type(exc).__name__))
    return answers


def old_server_activity(endpoint: Endpoint, accounts: list[tuple[str, ...]], since: datetime,
                        cafile: str | None = None, jobs: int = 4) -> list[MailboxActivity]:
    """Per account ``(user, password[, roster address])``: messages that reached the old server after ``since``,
    and the newest one's arrival.

    Every selectable folder is looked at (read-only), whatever its name; an
    account that cannot be read is reported with its error, never with its
    password.
    """
    since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
    return asyncio.run(_all_activity(endpoint, accounts, since, cafile, jobs))


async def _all_activity(endpoint: Endpoint, accounts: list[tuple[str, ...]], since: datetime, cafile: str | None,
                        jobs: int) -> list[MailboxActivity]:
    limit = asyncio.Semaphore(max(1, jobs))

    async def one(user: str, password: str, mailbox: str | None = None) -> MailboxActivity:
        async with limit:
            try:
                seen = await _activity(endpoint, user, password, since, cafile)
            except ImapError as exc:
                seen = MailboxActivity(user, error=str(exc))
            except ValueError as exc:  # an INTERNALDATE the server wrote in no known form
                seen = MailboxActivity(user, error=f"old server {endpoint}: {exc}")
            return replace(seen, mailbox=mailbox or None)

    return list(await asyncio.gather(*(one(*account) for account in accounts)))


async def _activity(endpoint: Endpoint, user: str, password: str, since: datetime, cafile: str | None) -> MailboxActivity:
    imap = await login(endpoint.trusting(cafile), user, password, "old server", 30)
    try:
        arrivals: list[datetime] = []
        # SEARCH SINCE compares dates only, in a time zone of the server's choosing: ask from the day before,
        # then compare the exact internal dates.
        day = (since.astimezone(timezone.utc) - timedelta(days=1)).date()
        for folder in await imap.list_folders():
            if not folder.selectable:
                continue
            try:
                await imap.select(folder.name, readonly=True)
            except NoSuchFolder:
                continue  # deleted since LIST
            uids = await imap.search_since(day)
            if uids:
                listed = await imap.list_messages(uids, details=True)
                arrivals += [_arrival(m.internaldate) for m in listed if m.internaldate]
        return new_mail(user, arrivals, since)
    finally:
        await imap.logout()


def new_mail(account: str, arrivals: list[datetime], since: datetime) -> MailboxActivity:
    """The arrivals after ``since``: how many, and the newest."""
    newer = [a for a in arrivals if a > since]
    return MailboxActivity(account, max(newer) if newer else None, len(newer))


def _arrival(internaldate: str) -> datetime:
    return datetime.fromtimestamp(internaldate_epoch(internaldate), timezone.utc)


def measure(settings: Settings, evidence: Evidence | None, now: datetime, *, dns_server: str | None,
            roster: Collection[str], resolvers: list[str] = (), logins: list[tuple[str, str, str]] = (),
            old_server: Endpoint | None = None, cafile: str | None = None) -> StatusReport:
    """Everything `mailstack status` looks at, asked of the live servers, assessed at ``now``.

    The MX of every domain from every authoritative server of the zone (and the
    given resolvers); after the cutover, mail that reached the old server
    (``old_server``: default the stack's ``old_server.imap``), per login
    ``(user, password, roster address)``.
    """
    answers = [a for d in settings.domains for a in authoritative_answers(settings.zone, d, dns_server)]
    answers += [a for d in settings.domains for a in resolver_answers(d, list(resolvers))]
    since = evidence.new_mx_first_seen_at if evidence and evidence.new_mx_first_seen_at else None
    activity = []
    if since and logins:
        activity = old_server_activity(old_server or settings.old_server.imap, list(logins), since, cafile)
    return assess(settings, evidence, answers, activity, now, roster=roster)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
