"""``mailstack status``: where the migration stands (MX propagation, mail still reaching the old server, the overlap)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mailstack.cli.common import EXIT_PROBLEMS, JsonOption, RequiredStackOption, command, fail, out
from mailstack.problems import InputError


def register(app: typer.Typer) -> None:
    command(app, "status", status)


def _old_server_logins(path: Path) -> list[tuple[str, str]]:
    """The old-server logins of the sync's accounts file (its source-only form is accepted)."""
    from mailstack.sync.accounts import read_accounts

    accounts, problems = read_accounts(path, source_only=True)
    if problems:
        raise InputError(f"accounts file {path}", problems)
    return [(a.source_user, a.source_password) for a in accounts]


def status(
    stack: str = RequiredStackOption,
    dns_server: Optional[str] = typer.Option(None, help="Where to look up the zone's name servers (IP[:PORT])."),
    resolver: list[str] = typer.Option([], "--resolver", help="A resolver to ask too (IP[:PORT]); repeatable."),
    accounts: Optional[Path] = typer.Option(None, help="The sync's accounts CSV (its source columns: the old-server "
                                                       "logins) to look for new mail."),
    cafile: Optional[Path] = typer.Option(None, help="CA certificate(s) for the old server's TLS."),
    record: bool = typer.Option(False, "--record", help="Fold what was seen into the evidence file."),
    as_json: bool = JsonOption,
) -> None:
    """Where the migration stands: MX propagation, mail still reaching the old server, the overlap clock."""
    from mailstack.migration.evidence import evidence_path, load_evidence, save_evidence
    from mailstack.stack.settings import load_stack_file
    from mailstack.migration.status import measure, now_utc

    try:
        stack_file = load_stack_file(stack)
        settings = stack_file.settings
        path = evidence_path(stack_file.project_dir, stack)
        evidence = load_evidence(path)
        logins = _old_server_logins(accounts) if accounts else []
    except InputError as exc:
        fail(exc)
    report = measure(settings, evidence, now_utc(), dns_server=dns_server, resolvers=resolver, logins=logins,
                     cafile=str(cafile) if cafile else None)
    if record:
        save_evidence(path, report.evidence)
    _print_status(out, stack, report, as_json, recorded=path if record else None)
    observed = all(not a.error for a in report.answers) and all(not a.error for a in report.activity)
    raise typer.Exit(0 if observed else EXIT_PROBLEMS)


def _print_status(out, stack: str, report, as_json: bool, recorded: Path | None) -> None:
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
    }
    if as_json:
        out.print_json(json.dumps(data, default=str))
        return
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
    verdict = "allowed" if report.decommission.allowed else "not yet: " + "; ".join(report.decommission.reasons)
    out.print(f"decommission: {verdict}", markup=False)
    for note in report.notes:
        out.print(f"note: {note}", markup=False)
    if recorded:
        out.print(f"evidence updated: {recorded}", markup=False)
