"""`mailstack verify` and `mailstack status`: the evidence that gates the MX flip and the teardown."""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mailstack.checks import Status, Target, run_checks
from mailstack.problems import InputError, Problem

EXIT_CHECKS_FAILED = 3
_STYLE = {Status.OK: "green", Status.WARNING: "yellow", Status.ERROR: "red"}


def read_password_file(path: Path) -> str:
    """The first line of a password file (kept off the command line and out of shell history)."""
    try:
        password = path.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError):
        raise InputError("password file", [Problem(str(path), "cannot read a password from it (one line, the password)")]) from None
    if not password:
        raise InputError("password file", [Problem(str(path), "the first line is empty")])
    return password


def read_source_accounts(path: Path) -> list[tuple[str, str]]:
    """Old-server logins from an accounts CSV (``source_user,source_password,...``, the sync's format)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise InputError(f"accounts {path}", [Problem(str(path), f"cannot read it: {exc.strerror}")]) from None
    problems = [Problem(f"{path}:{n}", "source_user and source_password are required")
                for n, row in enumerate(rows, start=2) if not (row.get("source_user") and row.get("source_password"))]
    if problems:
        raise InputError(f"accounts {path}", problems)
    return [(row["source_user"], row["source_password"]) for row in rows]


def _mailbox_check(accounts_file: Path, source: str | None, settings, target_host: str, address: str | None,
                   cafile: Path | None,
                   include: list[str], exclude: list[str], renames: list[str]):
    """The mailbox comparison as a check: old server (``--source`` or the stack's) against imaps://TARGET:993.

    Every input problem (accounts file lines, the source URL, a rename) is
    raised at once, before any check runs.
    """
    from mailstack.checks.mailboxes import mailbox_check
    from mailstack.settings import parse_endpoint
    from mailstack.sync.accounts import read_accounts
    from mailstack.sync.engine import Server
    from mailstack.sync.plan import FolderRules, parse_rename

    problems: list[Problem] = []
    source = source or (str(settings.old_server.imap) if settings else None)
    endpoint = None
    if not source:
        problems.append(Problem("--source", "give the old server as imap[s]://HOST[:PORT], or -s ENV"))
    else:
        try:
            endpoint = parse_endpoint(source, ("imap", "imaps"))
        except ValueError as exc:
            problems.append(Problem("--source", str(exc)))
    parsed = []
    for rename in renames:
        try:
            parsed.append(parse_rename(rename))
        except ValueError as exc:
            problems.append(Problem("--map", str(exc)))
    accounts, bad_rows = read_accounts(accounts_file)
    problems += bad_rows
    if not accounts and not bad_rows:
        problems.append(Problem(str(accounts_file), "no account rows"))
    if problems:
        raise InputError("verify", problems)
    ca = str(cafile) if cafile else None
    rules = FolderRules(tuple(include) or ("*",), tuple(exclude), tuple(parsed))
    return mailbox_check(accounts, Server(endpoint.host, endpoint.port, endpoint.tls, ca),
                         Server(target_host, 993, True, ca, address), rules)


def register(app: typer.Typer) -> None:
    """Add `verify` and `status` to the mailstack command."""
    from mailstack.console import EXIT_PROBLEMS, _fail, err, out
    from mailstack.cli_sync import ACCOUNTS_ENV, ExcludeOption, IncludeOption

    @app.command("verify")
    def verify(
        stack: Optional[str] = typer.Option(None, "-s", "--stack", help="Stack: host and domain from its settings."),
        host: Optional[str] = typer.Option(None, help="Host name of the new mail host."),
        domain: Optional[str] = typer.Option(None, help="Mail domain to check DNS of."),
        address: Optional[str] = typer.Option(None, help="Connect to this IP instead of resolving the host."),
        user: Optional[str] = typer.Option(None, help="Test mailbox for the delivery checks."),
        password_file: Optional[Path] = typer.Option(None, help="File whose first line is the test mailbox's password."),
        cafile: Optional[Path] = typer.Option(None, help="CA certificate(s) to trust (default: the system's)."),
        dns_server: Optional[str] = typer.Option(None, help="Ask this DNS server (IP[:PORT]) instead of the system's."),
        dkim_selector: Optional[str] = typer.Option(None, help="DKIM selector to check."),
        dkim_key: Optional[str] = typer.Option(None, help="Expected DKIM public key (base64), e.g. from the stack outputs."),
        mta_sts: Optional[bool] = typer.Option(None, "--mta-sts/--no-mta-sts", help="Check MTA-STS and TLS-RPT records."),
        accounts_file: Optional[Path] = typer.Option(
            None, "--accounts", envvar=ACCOUNTS_ENV, show_envvar=True,
            help="The sync's accounts CSV: compare every mailbox, folder by folder, with the old server "
                 "(without it, that check is skipped)."),
        source: Optional[str] = typer.Option(None, "--source", help="Old server for the mailbox comparison, "
                                                                    "imaps://HOST[:PORT] (or imap://); with -s: the stack's "
                                                                    "old_server.imap."),
        include: list[str] = IncludeOption,
        exclude: list[str] = ExcludeOption,
        renames: list[str] = typer.Option([], "--map", help="A folder rename the sync was given, OLD=NEW (repeatable)."),
        record: bool = typer.Option(False, "--record", help="On success, write the evidence file of the stack."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    ) -> None:
        """Check the new host as its users and other mail servers will: ports, TLS, AUTH, relay, delivery, DNS,
        and (with --accounts) that every migrated mailbox holds what the old server holds."""
        from mailstack.checks.dns import dns_checks
        from mailstack.checks.mailboxes import CHECK as MAILBOX_CHECK
        from mailstack.checks.service import SERVICE_CHECKS

        try:
            settings = None
            if stack:
                from mailstack.settings import load_stack_file

                stack_file = load_stack_file(stack)
                settings = stack_file.settings
            host_name = host or (settings.host.name if settings else None)
            domain_name = domain or (settings.primary_domain if settings else None)
            if not (host_name and domain_name):
                raise InputError("verify", [Problem("arguments", "give -s ENV, or --host and --domain")])
            if record and not stack:
                raise InputError("verify", [Problem("--record", "the evidence belongs to a stack: give -s ENV")])
            password = read_password_file(password_file) if password_file else None
            checks = [*SERVICE_CHECKS, dns_checks]
            skipped = []
            if accounts_file:
                checks.append(_mailbox_check(accounts_file, source, settings, host_name, address, cafile,
                                             include, exclude, renames))
            else:
                skipped.append({"check": MAILBOX_CHECK,
                                "reason": f"give --accounts FILE (or set {ACCOUNTS_ENV}), the sync's accounts CSV"})
        except InputError as exc:
            _fail(exc)
        target = Target(host=host_name, domain=domain_name, address=address, user=user, password=password,
                        cafile=str(cafile) if cafile else None, dns_server=dns_server, dkim_selector=dkim_selector,
                        dkim_public_key=dkim_key, mta_sts=mta_sts if mta_sts is not None else bool(settings and settings.web))
        results = run_checks(checks, target)
        failed = [r for r in results if not r.passed]
        if as_json:
            out.print_json(json.dumps({"host": host_name, "passed": not failed, "results": [r.as_dict() for r in results],
                                       "skipped": skipped}))
        else:
            table = Table("check", "result", "detail", "how to fix", title=f"mailstack verify {host_name}")
            for r in results:
                table.add_row(r.check, f"[{_STYLE[r.status]}]{r.status.value}[/]", r.detail, r.remedy)
            out.print(table)
            for s in skipped:
                out.print(f"not checked: {s['check']}: {s['reason']}", markup=False)
        if failed:
            err.print(f"{len(failed)} of {len(results)} checks failed; no evidence written", markup=False)
            raise typer.Exit(EXIT_CHECKS_FAILED)
        if record:
            path = _record_verification(stack_file, host_name, address, results)
            out.print(f"evidence written to {path}", markup=False)

    @app.command("status")
    def status(
        stack: str = typer.Option(..., "-s", "--stack", help="Stack (environment) name."),
        dns_server: Optional[str] = typer.Option(None, help="Where to look up the zone's name servers (IP[:PORT])."),
        resolver: list[str] = typer.Option([], "--resolver", help="A resolver to ask too (IP[:PORT]); repeatable."),
        accounts: Optional[Path] = typer.Option(None, help="Old-server logins (accounts CSV) to look for new mail."),
        cafile: Optional[Path] = typer.Option(None, help="CA certificate(s) for the old server's TLS."),
        record: bool = typer.Option(False, "--record", help="Fold what was seen into the evidence file."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Where the migration stands: MX propagation, mail still reaching the old server, the overlap clock."""
        from mailstack.evidence import evidence_path, load_evidence, save_evidence
        from mailstack.settings import load_stack_file
        from mailstack.status import assess, authoritative_answers, now_utc, old_server_activity, resolver_answers

        try:
            stack_file = load_stack_file(stack)
            settings = stack_file.settings
            path = evidence_path(stack_file.project_dir, stack)
            evidence = load_evidence(path)
            logins = read_source_accounts(accounts) if accounts else []
        except InputError as exc:
            _fail(exc)
        now = now_utc()
        answers = [a for d in settings.domains for a in authoritative_answers(settings.zone, d, dns_server)]
        answers += [a for d in settings.domains for a in resolver_answers(d, resolver)]
        since = evidence.new_mx_first_seen_at if evidence and evidence.new_mx_first_seen_at else None
        activity = old_server_activity(settings.old_server.imap, logins, since, str(cafile) if cafile else None) if since and logins else []
        report = assess(settings, evidence, answers, activity, now)
        if record:
            save_evidence(path, report.evidence)
        _print_status(out, stack, report, as_json, recorded=path if record else None)
        raise typer.Exit(0 if all(not a.error for a in answers) and all(not a.error for a in activity) else EXIT_PROBLEMS)


def _record_verification(stack_file, host_name: str, address: str | None, results) -> Path:
    from datetime import datetime, timezone

    from mailstack.evidence import Verification, evidence_path, record

    certificate = next(r for r in results if r.check == "certificate")
    ip = address or socket.gethostbyname(host_name)
    path = evidence_path(stack_file.project_dir, stack_file.env)
    record(path, verification=Verification(at=datetime.now(timezone.utc), host_name=host_name, host_ip=ip,
                                            certificate_sha256=certificate.facts["sha256"],
                                            checks=[r.check for r in results]))
    return path


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
