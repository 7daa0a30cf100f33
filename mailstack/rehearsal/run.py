"""The whole migration on one machine, in the operator's order, through the commands' own code.

Every step calls what the CLI command calls (backup, sync, verify's checks,
status's measurement, the gates) against real servers on loopback. The waits
of a real migration (the old MX TTL, the overlap, the quiet days) pass on an
injected clock: it starts one old TTL in the past, so that mail delivered
for real later in the run is on the same time line, and it moves forward
only where a gate asks to wait. Evidence is written by the same functions as
the commands, with the clock's time: never edited.
"""

from __future__ import annotations

import smtplib
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from mailstack.checks import Target, run_checks
from mailstack.checks.dns import dns_checks
from mailstack.checks.mailboxes import mailbox_check
from mailstack.checks.outbound import outbound_check, undeclared_check
from mailstack.checks.service import SERVICE_CHECKS
from mailstack.imap import ImapError
from mailstack.imap.endpoint import Endpoint
from mailstack.imap.wire import printable
from mailstack.local.host import LocalHostError
from mailstack.local.corpus import mailbox_corpus, split_evenly
from mailstack.migration.evidence import evidence_path, load_evidence, record, save_evidence, verification_of
from mailstack.migration.lifecycle import Decision, cutover_gate, decommission_gate
from mailstack.migration.status import measure
from mailstack.rehearsal.mail import compare, deliver, fill_mailbox, inventory
from mailstack.rehearsal.world import World, rehearsal_roster
from mailstack.stack.roster import Roster
from mailstack.stack.settings import Settings
from mailstack.sync.accounts import Account
from mailstack.sync.backup import run_backup
from mailstack.sync.engine import SyncOptions, run_sync
from mailstack.sync.report import sync_coverage
from mailstack.sync.reverse import reversed_accounts


REHEARSAL_PROBE = "outbound-probe@rehearsal.invalid"
"""Where the rehearsal's outbound probe goes when the stack names no mailstack:outbound_probe (the sink takes it)."""


@dataclass
class Clock:
    """Now, as the rehearsal's gates see it: real time plus an offset that only grows."""

    offset: timedelta = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


@dataclass
class StepResult:
    name: str
    seconds: float
    ok: bool
    detail: str
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"step": self.name, "seconds": round(self.seconds, 2), "ok": self.ok, "detail": self.detail, **self.data}


@dataclass
class GateResult:
    gate: str
    at: datetime
    allowed: bool
    reasons: tuple[str, ...]
    expected: bool

    def to_dict(self) -> dict:
        return {"gate": self.gate, "at": self.at.isoformat(timespec="seconds"), "allowed": self.allowed,
                "expected": self.expected, "as_expected": self.allowed == self.expected, "reasons": list(self.reasons)}


@dataclass
class Rehearsal:
    """What ran and what it showed: the report."""

    stack: str
    steps: list[StepResult] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    mailboxes: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (all(s.ok for s in self.steps) and all(g.allowed == g.expected for g in self.gates)
                and bool(self.mailboxes) and all(v.exact for v in self.mailboxes))

    def to_dict(self) -> dict:
        return {"stack": self.stack, "ok": self.ok, "seconds": round(sum(s.seconds for s in self.steps), 2),
                "steps": [s.to_dict() for s in self.steps], "gates": [g.to_dict() for g in self.gates],
                "comparison": {"mailboxes": [v.to_dict() for v in self.mailboxes],
                               "lost": sum(len(v.lost) for v in self.mailboxes),
                               "duplicated": sum(len(v.duplicated) for v in self.mailboxes),
                               "flags_differ": sum(len(v.flags_differ) for v in self.mailboxes),
                               "dates_differ": sum(len(v.dates_differ) for v in self.mailboxes)}}


class StepFailed(Exception):
    """A step could not do its work; the rehearsal stops there and reports it."""


@dataclass
class Options:
    mailboxes: int | None = None  # the roster's first N mailboxes; default: all
    messages: int = 2000  # spread over the mailboxes
    seed: str = "mailstack-rehearsal"


def _phase(settings: Settings, phase: str) -> Settings:
    return settings.model_copy(update={"phase": phase})


class Runner:
    """Runs the steps against a started :class:`World`, appending to the report as it goes."""

    def __init__(self, world: World, settings: Settings, roster: Roster, report: Rehearsal, options: Options,
                 show: Callable[[str], None]):
        self.world, self.settings, self.roster, self.report, self.options = world, settings, roster, report, options
        self.show = show
        self.clock = Clock()
        self.evidence_file = evidence_path(world.work / "project", report.stack)
        self.evidence_file.parent.mkdir(parents=True)
        addresses = world.addresses
        self.old = Endpoint("imaps", settings.old_server.host, 993, world.cafile, addresses.old)
        self.new = Endpoint("imaps", settings.host.name, 993, world.cafile, addresses.new)
        self.accounts = [Account(m.address, world.old_password(m.address), m.address, world.new_password(m.address),
                                 f"rehearsal:{n}") for n, m in enumerate(roster, start=1)]
        self.roster_addresses = [m.address for m in roster]

    # ------------------------------------------------------------ plumbing

    def step(self, name: str, work: Callable[[], tuple[bool, str, dict]]) -> StepResult:
        self.show(f"… {name}")
        started = time.monotonic()
        try:
            ok, detail, data = work()
        except (StepFailed, ImapError, LocalHostError, OSError, smtplib.SMTPException, RuntimeError) as exc:
            # Whatever a server answered, the step failed with that reason; the rest is not run.
            ok, detail, data = False, printable(str(exc), 500), {}
        result = StepResult(name, time.monotonic() - started, ok, detail, data)
        self.report.steps.append(result)
        self.show(f"{'ok ' if ok else 'FAILED'} {name} ({result.seconds:.1f} s): {detail}")
        if not ok:
            raise StepFailed(f"{name}: {detail}")
        return result

    def gate(self, decision: Decision, expected: bool) -> GateResult:
        result = GateResult(decision.phase, self.clock.now(), decision.allowed, decision.reasons, expected)
        self.report.gates.append(result)
        verdict = "allowed" if decision.allowed else "refused: " + "; ".join(decision.reasons)
        self.show(f"gate {result.gate} at {result.at:%Y-%m-%d %H:%M} (rehearsal clock): {verdict}")
        return result

    def evidence(self):
        return load_evidence(self.evidence_file)

    def status(self, phase: str, *, with_activity: bool = False) -> tuple[bool, str, dict]:
        logins = [(a.source_user, a.source_password, a.target_user) for a in self.accounts] if with_activity else []
        report = measure(_phase(self.settings, phase), self.evidence(), self.clock.now(),
                         dns_server=self.world.dns.server, roster=self.roster_addresses, logins=logins,
                         old_server=self.old, cafile=self.world.cafile)
        save_evidence(self.evidence_file, report.evidence)
        errors = [a.error for a in report.answers if a.error] + [f"{a.account}: {a.error}" for a in report.activity
                                                                  if a.error]
        seen = sum(a.messages for a in report.activity)
        detail = f"MX propagation {report.propagation}" + (f"; {seen} new messages on the old server" if logins else "")
        return not errors, "; ".join(errors) or detail, {"propagation": report.propagation,
                                                         "old_server_new_messages": seen}

    def sync(self, *, reverse: bool = False) -> tuple[bool, str, dict]:
        """`mailstack sync -s ENV` (or `--reverse`): the engine, then the run's coverage in the evidence."""
        accounts, source, target = self.accounts, self.old, self.new
        if reverse:
            accounts, source, target = reversed_accounts(accounts), self.new, self.old
        results = run_sync(accounts, source, target, SyncOptions(state_dir=self.world.work / "state", jobs=4))
        copied = sum(r.total("copied") for r in results)
        problems = [e for r in results for e in r.errors]
        record(self.evidence_file, **sync_coverage(results, 0, self.clock.now(), reverse=reverse))
        return not problems, "; ".join(problems[:3]) or f"{copied} messages copied, every mailbox in sync", {
            "copied": copied, "bytes": sum(r.total("bytes") for r in results)}

    # ------------------------------------------------------------ the steps

    def fill_old_server(self) -> tuple[bool, str, dict]:
        counts = split_evenly(self.options.messages, len(self.accounts))
        stored = 0
        for account, count in zip(self.accounts, counts):
            corpus = mailbox_corpus(account.source_user, count, seed=self.options.seed)
            stored += fill_mailbox(self.old, account.source_user, account.source_password, corpus)
        return stored == self.options.messages, f"{stored} messages in {len(self.accounts)} mailboxes", {
            "messages": stored}

    def serve(self, phase: str) -> tuple[bool, str, dict]:
        records = self.world.records(_phase(self.settings, phase))
        self.world.serve(records)
        mx = [r for r in records if r.type == "MX"][0]
        return True, f"{len(records)} records served; MX {' '.join(mx.values)} TTL {mx.ttl}", {}

    def backup(self) -> tuple[bool, str, dict]:
        results = run_backup(self.accounts, self.old, self.world.work / "backup")
        failed = [f"{r.user}: {r.error}" for r in results if r.error]
        if not failed:
            record(self.evidence_file, backup_at=self.clock.now())
        written = sum(r.written for r in results)
        return not failed, "; ".join(failed) or f"{written} messages saved", {"messages": written}

    def verify(self) -> tuple[bool, str, dict]:
        box = self.accounts[0]
        target = Target(host=self.settings.host.name, domain=self.settings.primary_domain,
                        address=self.world.addresses.new, user=box.target_user, password=box.target_password,
                        cafile=self.world.cafile, dns_server=self.world.dns.server,
                        dkim_selector=self.settings.dns.dkim_selector, mta_sts=self.settings.web)
        route = self.settings.outbound
        # The world's sink stands in for the declared way out, so the probe needs no real address behind it.
        outbound = (outbound_check(route, route.probe or REHEARSAL_PROBE) if route
                    else undeclared_check(self.report.stack))
        checks = [*SERVICE_CHECKS, dns_checks, mailbox_check(self.accounts, self.old, self.new), outbound]
        results = run_checks(checks, target)
        failed = [f"{r.check}: {r.detail}" for r in results if not r.passed]
        if not failed:
            record(self.evidence_file, verification=verification_of(results, self.settings.host.name,
                                                                     self.world.addresses.new, self.clock.now()))
        return not failed, "; ".join(failed) or f"{len(results)} checks passed; evidence recorded", {
            "checks": len(results), "failed": len(failed)}

    def cutover_gate(self, expected: bool) -> GateResult:
        decision = cutover_gate(_phase(self.settings, "cutover"), self.evidence(), self.clock.now(),
                                host_name=self.settings.host.name, host_ip=self.world.addresses.new,
                                roster=self.roster_addresses)
        return self.gate(decision, expected)

    def decommission_gate(self, expected: bool) -> GateResult:
        return self.gate(decommission_gate(_phase(self.settings, "decommission"), self.evidence(), self.clock.now(),
                                           roster=self.roster_addresses), expected)

    def deliver_to(self, server: str, label: str) -> tuple[bool, str, dict]:
        # Arrival dates have one-second resolution: deliver after the second in which the MX was seen to change.
        time.sleep(1.1)
        address = self.world.addresses.old if server == "old" else self.world.addresses.new
        for account in self.accounts:
            deliver(address, account.target_user, f"{label} for {account.target_user}", cafile=self.world.cafile)
        return True, f"{len(self.accounts)} messages delivered to the {server} server over SMTP", {
            "messages": len(self.accounts)}

    def compare_all(self) -> tuple[bool, str, dict]:
        self.report.mailboxes = []
        for account in self.accounts:
            old = inventory(self.old, account.source_user, account.source_password)
            new = inventory(self.new, account.target_user, account.target_password)
            self.report.mailboxes.append(compare(account.target_user, old, new))
        lost = sum(len(v.lost) for v in self.report.mailboxes)
        duplicated = sum(len(v.duplicated) for v in self.report.mailboxes)
        differ = sum(len(v.flags_differ) + len(v.dates_differ) for v in self.report.mailboxes)
        exact = all(v.exact for v in self.report.mailboxes)
        return exact, (f"{sum(v.old_messages for v in self.report.mailboxes)} messages on the old server, all on "
                       f"the new host; {lost} lost, {duplicated} duplicated, {differ} with other flags or dates"), {}

    def run(self) -> None:
        s = self.settings
        previous_ttl = s.normal_ttl
        # The clock starts one old TTL (and a minute) in the past: the wait the cutover gate will ask for.
        self.clock.advance(-timedelta(seconds=previous_ttl + 60))
        self.step("old server filled", self.fill_old_server)
        self.step("before: status --record", lambda: self.status("provision"))
        self.step("provision: DNS", lambda: self.serve("provision"))
        self.step("provision: status --record", lambda: self.status("provision"))
        self.step("backup", self.backup)
        self.step("sync", self.sync)
        self.step("verify --record", self.verify)
        self.cutover_gate(expected=False)
        self.clock.advance(-self.clock.offset)  # the old TTL has now passed: the clock meets real time
        self.cutover_gate(expected=True)
        self.step("cutover: MX flip", lambda: self.serve("cutover"))
        self.step("cutover: status --record", lambda: self.status("cutover"))
        self.step("mail to the old server (stale resolvers)", lambda: self.deliver_to("old", "Straggler 1"))
        self.step("mail to the new host", lambda: self.deliver_to("new", "After the cutover"))
        self.step("status --record (old-server activity)", lambda: self.status("cutover", with_activity=True))
        self.step("straggler sync", self.sync)
        self.step("rollback: MX back", lambda: self.serve("provision"))
        self.step("rollback: status --record", lambda: self.status("provision"))
        self.step("rollback: reverse sync", lambda: self.sync(reverse=True))
        self.cutover_gate(expected=True)
        self.step("cutover again: MX flip", lambda: self.serve("cutover"))
        self.step("cutover again: status --record", lambda: self.status("cutover"))
        self.step("mail to the old server (stale resolvers)", lambda: self.deliver_to("old", "Straggler 2"))
        self.step("straggler sync", self.sync)
        self.decommission_gate(expected=False)
        self.clock.advance(timedelta(days=max(s.overlap_days, s.quiet_days), minutes=1))
        self.step("overlap over: status --record", lambda: self.status("cutover", with_activity=True))
        self.step("final sync", self.sync)
        self.decommission_gate(expected=True)
        self.step("decommission: DNS", lambda: self.serve("decommission"))
        self.step("old and new compared", self.compare_all)


def rehearse(settings: Settings, roster: Roster, stack: str, options: Options, show: Callable[[str], None],
             *, keep: bool = False) -> Rehearsal:
    """Run the rehearsal; everything it started is stopped and removed when it ends (unless ``keep``)."""
    roster = rehearsal_roster(roster, options.mailboxes)
    world = World(settings, roster, keep=keep)
    report = Rehearsal(stack)
    started = time.monotonic()
    try:
        show("starting the old server, the new host and DNS on loopback")
        world.start(previous_ttl=settings.normal_ttl)
        report.steps.append(StepResult("servers started", time.monotonic() - started, True,
                                       f"old {world.addresses.old}, new {world.addresses.new}, "
                                       f"DNS {world.addresses.dns}, relay {world.addresses.relay}"))
        Runner(world, settings, roster, report, options, show).run()
    except StepFailed:
        pass
    finally:
        problems = world.stop()
        for problem in problems:
            show(f"cleanup: {problem}")
    return report

