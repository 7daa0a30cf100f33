"""``mailstack verify``: every check of the new host; on success, the evidence that gates the MX flip."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Optional

import typer

from mailstack.cli.common import (
    ACCOUNTS_ENV, EXIT_FAILED, ExcludeOption, IncludeOption, JsonOption, command, err, fail, out, print_json,
)
from mailstack.problems import InputError, Problem

_STYLE = {"ok": "green", "warning": "yellow", "error": "red"}  # by Status value


def register(app: typer.Typer) -> None:
    command(app, "verify", verify)


def read_password_file(path: Path) -> str:
    """The first line of a password file (kept off the command line and out of shell history)."""
    try:
        password = path.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError):
        raise InputError("password file", [Problem(str(path), "cannot read a password from it (one line, the password)")]) from None
    if not password:
        raise InputError("password file", [Problem(str(path), "the first line is empty")])
    return password


def _mailbox_check(accounts_file: Path, source: str | None, settings, target_host: str, address: str | None,
                   cafile: Path | None,
                   include: list[str], exclude: list[str], renames: list[str], map_invalid: bool = False):
    """The mailbox comparison as a check: old server (``--source`` or the stack's) against imaps://TARGET:993.

    Every input problem (accounts file lines, the source URL, a rename) is
    raised at once, before any check runs.
    """
    from mailstack.checks.mailboxes import mailbox_check
    from mailstack.imap.endpoint import Endpoint, parse_endpoint
    from mailstack.sync.accounts import read_accounts
    from mailstack.sync.plan import FolderRules, parse_rename

    problems: list[Problem] = []
    source = source or (str(settings.old_server.imap) if settings else None)
    endpoint = None
    if not source:
        problems.append(Problem("--source", "give the old server as imap[s]://HOST[:PORT], or -s ENV"))
    else:
        try:
            endpoint = parse_endpoint(source).trusting(str(cafile) if cafile else None)
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
    rules = FolderRules(tuple(include) or ("*",), tuple(exclude), tuple(parsed), map_invalid)
    target = Endpoint("imaps", target_host, 993, str(cafile) if cafile else None, address)
    return mailbox_check(accounts, endpoint, target, rules)


def _outbound_check(stack: str | None, settings, domain: str, probe: str | None):
    """The outbound check: the probe goes out by the stack's declared way (None: no stack and no probe, skipped)."""
    from mailstack.checks.outbound import outbound_check, undeclared_check
    from mailstack.stack.settings import probe_problem

    if probe and (problem := probe_problem(probe, settings.domains if settings else [domain])):
        raise InputError("verify", [Problem("--outbound-probe", problem)])
    if settings is None:
        return outbound_check(None, probe) if probe else None
    route = settings.outbound
    if route is None:
        return undeclared_check(stack)
    return outbound_check(route, probe or route.probe)


def verify(
    stack: Optional[str] = typer.Option(None, "-s", "--stack", help="Stack: host and domain from its settings."),
    host: Optional[str] = typer.Option(None, help="Host name of the new mail host."),
    domain: Optional[str] = typer.Option(None, help="Mail domain to check DNS of."),
    address: Optional[str] = typer.Option(None, help="Connect to this IP instead of resolving the host."),
    user: Optional[str] = typer.Option(None, help="Test mailbox for the delivery checks."),
    password_file: Optional[Path] = typer.Option(None, help="File whose first line is the test mailbox's password."),
    cafile: Optional[Path] = typer.Option(None, help="CA certificate(s) to trust (default: the system's)."),
    dns_server: Optional[str] = typer.Option(None, help="Ask this DNS server (IP[:PORT]) instead of the system's."),
    dkim_selector: Optional[str] = typer.Option(None, help="DKIM selector to check (with -s: the stack's "
                                                           "mailstack:dns.dkim_selector)."),
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
    map_invalid: bool = typer.Option(False, "--map-invalid", help="The sync was given --map-invalid."),
    outbound_probe: Optional[str] = typer.Option(
        None, "--outbound-probe", help="Send the outbound probe to this address outside the host's domains "
                                       "(with -s: default mailstack:outbound_probe, or SES's mailbox simulator)."),
    record: bool = typer.Option(False, "--record", help="On success, write the evidence file of the stack."),
    as_json: bool = JsonOption,
) -> None:
    """Check the new host as its users and other mail servers will: ports, TLS, AUTH, relay, delivery, DNS,
    that mail leaves it by the stack's declared way (a probe and its delivery report), and (with --accounts) that
    every migrated mailbox holds what the old server holds."""
    from mailstack.checks import Target, run_checks
    from mailstack.checks.dns import dns_checks
    from mailstack.checks.mailboxes import CHECK as MAILBOX_CHECK
    from mailstack.checks.outbound import CHECK as OUTBOUND_CHECK
    from mailstack.checks.service import SERVICE_CHECKS

    try:
        settings = None
        if stack:
            from mailstack.stack.settings import load_stack_file

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
                                         include, exclude, renames, map_invalid))
        else:
            skipped.append({"check": MAILBOX_CHECK,
                            "reason": f"give --accounts FILE (or set {ACCOUNTS_ENV}), the sync's accounts CSV"})
        outbound = _outbound_check(stack, settings, domain_name, outbound_probe)
        if outbound:
            checks.append(outbound)
        else:
            skipped.append({"check": OUTBOUND_CHECK,
                            "reason": "give --outbound-probe ADDRESS (outside the host's domains), or -s ENV"})
    except InputError as exc:
        fail(exc)
    target = Target(host=host_name, domain=domain_name, address=address, user=user, password=password,
                    cafile=str(cafile) if cafile else None, dns_server=dns_server,
                    dkim_selector=dkim_selector or (settings.dns.dkim_selector if settings else None),
                    dkim_public_key=dkim_key, mta_sts=mta_sts if mta_sts is not None else bool(settings and settings.web))
    results = run_checks(checks, target)
    failed = [r for r in results if not r.passed]
    if as_json:
        print_json({"host": host_name, "passed": not failed, "results": [r.as_dict() for r in results],
                    "skipped": skipped})
    else:
        from rich.table import Table
        from rich.text import Text

        table = Table("check", "result", "detail", "how to fix", title=f"mailstack verify {host_name}")
        for r in results:
            # Details may hold server text (folder names): shown as text, never read as markup.
            table.add_row(r.check, f"[{_STYLE[r.status.value]}]{r.status.value}[/]", Text(r.detail), Text(r.remedy))
        out.print(table)
        for s in skipped:
            out.print(f"not checked: {s['check']}: {s['reason']}", markup=False)
    if failed:
        err.print(f"{len(failed)} of {len(results)} checks failed; no evidence written", markup=False)
        raise typer.Exit(EXIT_FAILED)
    if record:
        path = _record_verification(stack_file, host_name, address, results)
        out.print(f"evidence written to {path}", markup=False)


def _record_verification(stack_file, host_name: str, address: str | None, results) -> Path:
    from datetime import datetime, timezone

    from mailstack.migration.evidence import evidence_path, record, verification_of

    ip = address or socket.gethostbyname(host_name)
    path = evidence_path(stack_file.project_dir, stack_file.env)
    record(path, verification=verification_of(results, host_name, ip, datetime.now(timezone.utc)))
    return path
