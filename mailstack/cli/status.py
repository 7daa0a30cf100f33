"""``mailstack status``: where the migration stands (MX propagation, mail still reaching the old server, the overlap)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mailstack.cli.common import (
    EXIT_PROBLEMS, JsonOption, RequiredStackOption, command, default_state_dir, fail, imap_endpoint, load_stack, out,
    print_json,
)
from mailstack.problems import InputError


def register(app: typer.Typer) -> None:
    command(app, "status", status)


def _read_accounts(path: Path):
    """The sync's accounts file (its source-only form is accepted: then no mailbox is recorded as watched)."""
    from mailstack.sync.accounts import read_accounts

    accounts, problems = read_accounts(path, source_only=True)
    if problems:
        raise InputError(f"accounts file {path}", problems)
    return accounts


def status(
    stack: str = RequiredStackOption,
    dns_server: Optional[str] = typer.Option(None, help="Where to look up the zone's name servers (IP[:PORT])."),
    resolver: list[str] = typer.Option([], "--resolver", help="A resolver to ask too (IP[:PORT]); repeatable."),
    accounts: Optional[Path] = typer.Option(None, help="The sync's accounts CSV (its source columns: the old-server "
                                                       "logins) to look for new mail."),
    cafile: Optional[Path] = typer.Option(None, help="CA certificate(s) for the old server's TLS (and the new "
                                                     "host's, after a rollback)."),
    new_host: Optional[str] = typer.Option(None, "--new-host", help="After a rollback, where to count the mail "
                                                                    "waiting on the new host: imap[s]://HOST[:PORT] "
                                                                    "[default: imaps://<host.name>:993]."),
    record: bool = typer.Option(False, "--record", help="Fold what was seen into the evidence file."),
    as_json: bool = JsonOption,
) -> None:
    """Where the migration stands: MX propagation, mail still reaching the old server, the overlap clock, and after
    a rollback the mail waiting on the new host."""
    from mailstack.migration.evidence import evidence_path, load_evidence, save_evidence
    from mailstack.migration.status import measure, now_utc

    stack_file, roster = load_stack(stack)
    settings = stack_file.settings
    try:
        path = evidence_path(stack_file.project_dir, stack)
        evidence = load_evidence(path)
        account_rows = _read_accounts(accounts) if accounts else []
    except InputError as exc:
        fail(exc)
    logins = [(a.source_user, a.source_password, a.target_user) for a in account_rows]
    report = measure(settings, evidence, now_utc(), dns_server=dns_server, roster=[m.address for m in roster],
                     resolvers=resolver, logins=logins, cafile=str(cafile) if cafile else None)
    waiting = _waiting_on_new_host(settings, account_rows, report, new_host, cafile)
    if record:
        save_evidence(path, report.evidence)
    _print_status(out, stack, report, as_json, recorded=path if record else None, waiting=waiting)
    failed = ([a for a in report.answers if a.error] + [a for a in report.activity if a.error]
              + [w for w in waiting if w.errors])
    raise typer.Exit(EXIT_PROBLEMS if failed else 0)


def _waiting_on_new_host(settings, account_rows, report, new_host: Optional[str], cafile: Optional[Path]) -> list:
    """After a rollback, per mailbox not yet copied back: what a reverse sync would copy (a dry run)."""
    from mailstack.sync.engine import SyncOptions
    from mailstack.sync.reverse import waiting_on_new_host

    pending = set(report.reverse_sync_pending)
    rows = [a for a in account_rows if a.target_user and a.target_password and a.target_user.lower() in pending]
    if not rows:
        return []
    new = imap_endpoint(new_host or f"imaps://{settings.host.name}:993", cafile, "--new-host")
    old = settings.old_server.imap.trusting(str(cafile) if cafile else None)
    return waiting_on_new_host(rows, old, new, SyncOptions(state_dir=default_state_dir()))


def _print_status(out, stack: str, report, as_json: bool, recorded: Path | None, waiting: list) -> None:
    data = {
        "phase": report.phase,
        "propagation": report.propagation,
        "answers": [vars(a) for a in report.answers],
        "old_server_activity": [{**vars(a), "newest": a.newest.isoformat() if a.newest else None} for a in report.activity],
        "overlap_days_left": round(report.overlap_left.total_seconds() / 86400, 1) if report.overlap_left is not None else None,
        "final_sync_needed": report.final_sync_needed,
        "decommission_allowed": report.decommission.allowed,
        "decommission_blocked_by": list(report.decommission.reasons),
        "notes": report.notes,
        "rollback": report.evidence.rollback.model_dump(mode="json") if report.evidence.rollback else None,
        "reverse_sync_pending": report.reverse_sync_pending,
        "waiting_on_new_host": [{"mailbox": w.source_user, "messages": w.total("copied"), "bytes": w.total("bytes"),
                                 "flag_updates": w.total("flag_updates"), "errors": w.errors} for w in waiting],
    }
    if as_json:
        print_json(data, default=str)
        return
    from rich.table import Table

    out.print(f"[bold]mailstack status -s {stack}[/bold]: phase {report.phase}, MX propagation {report.propagation}")
    table = Table("server", "kind", "MX", "TTL", title="MX as served")
    for a in report.answers:
        table.add_row(a.server, "authoritative" if a.authoritative else "resolver",
                      a.error or ", ".join(a.hosts), "" if a.ttl is None else str(a.ttl))
    out.print(table)
    for a in report.activity:
        seen = a.error or (f"{a.messages} new since the cutover, newest {a.newest:%Y-%m-%d %H:%M} UTC" if a.newest else "nothing new")
        out.print(f"old server, {a.account}: {seen}", markup=False)
    if data["overlap_days_left"] is not None:
        out.print(f"overlap: {data['overlap_days_left']} days left")
    if report.final_sync_needed:
        out.print("a final sync is needed: mail reached the old server after the last sync")
    if report.reverse_sync_pending:
        rollback = report.evidence.rollback
        out.print(f"rollback at {rollback.at:%Y-%m-%d %H:%M} UTC: mail that reached the new host since the cutover "
                  f"({rollback.cutover_at:%Y-%m-%d %H:%M} UTC) is not copied back for "
                  f"{len(report.reverse_sync_pending)} mailbox(es): run mailstack sync -s {stack} --reverse "
                  "--accounts FILE", markup=False)
    for w in waiting:
        seen = "; ".join(w.errors) if w.errors else (
            f"{w.total('copied')} messages ({w.total('bytes')} bytes) and {w.total('flag_updates')} flag changes "
            "waiting to be copied back" if w.total("copied") or w.total("flag_updates") else "nothing waiting")
        out.print(f"new host, {w.source_user}: {seen}", markup=False)
    verdict = "allowed" if report.decommission.allowed else "not yet: " + "; ".join(report.decommission.reasons)
    out.print(f"decommission: {verdict}", markup=False)
    for note in report.notes:
        out.print(f"note: {note}", markup=False)
    if recorded:
        out.print(f"evidence updated: {recorded}", markup=False)
