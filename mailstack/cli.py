"""The operations CLI: ``mailstack ...``.

Exit codes: 0 done, 1 the input has problems (each reported with where and
what to do), 2 wrong usage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mailstack.cli_local import local_app
from mailstack.console import EXIT_PROBLEMS, _fail, _load_stack, err, out  # noqa: F401  (shared by the subcommands)
from mailstack.problems import InputError

app = typer.Typer(help="Move an organisation's mail to a new mail host on AWS, safely.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
roster_app = typer.Typer(help="Check and prepare mailbox rosters.", no_args_is_help=True)
app.add_typer(roster_app, name="roster")
app.add_typer(local_app, name="local")

StackOption = typer.Option(None, "-s", "--stack", help="Stack (environment) name, as in stacks/Pulumi.<env>.yaml.")


@roster_app.command("check")
def roster_check(
    file: Path = typer.Argument(..., help="Roster file: .csv, .yaml or .xlsx."),
    stack: Optional[str] = StackOption,
    domain: list[str] = typer.Option([], "--domain", "-d", help="Allowed mail domain (repeatable); default: the stack's."),
) -> None:
    """Report every problem of a roster, with file and line."""
    from mailstack.roster import check_roster
    from mailstack.settings import load_stack_file

    try:
        domains = list(domain)
        default_quota = "1G"
        if stack:
            stack_file = load_stack_file(stack)
            domains = domains or stack_file.settings.domains
            default_quota = stack_file.settings.default_quota
        problems = check_roster(file, domains=domains or None, default_quota=default_quota)
    except InputError as exc:
        _fail(exc)
    if problems:
        _fail(InputError(f"roster {file}", problems))
    from mailstack.roster import load_roster

    roster = load_roster(file, domains=domains or None, default_quota=default_quota)
    scope = f"domains {', '.join(domains)}" if domains else "any domain (give -s ENV or --domain to check domains)"
    out.print(f"roster {file}: {len(roster)} mailboxes, no problems; checked against {scope}", markup=False)


@roster_app.command("hash")
def roster_hash(
    source: Path = typer.Argument(..., help="Spreadsheet with plaintext passwords (.csv, .xlsx, .yaml)."),
    dest: Path = typer.Argument(..., help="Roster to write (.csv or .yaml) with the passwords hashed."),
    overwrite: bool = typer.Option(False, help="Replace DEST if it exists."),
) -> None:
    """Turn a spreadsheet of plaintext passwords into a roster of SHA512-CRYPT hashes."""
    from mailstack.roster import hash_roster

    try:
        count = hash_roster(source, dest, overwrite=overwrite)
    except InputError as exc:
        _fail(exc)
    out.print(f"wrote {dest}: {count} passwords hashed (SHA512-CRYPT). "
              f"Keep {source} out of git and delete it once the migration is done.", markup=False)


@app.command("check")
def check(stack: str = typer.Option(..., "-s", "--stack", help="Stack (environment) name.")) -> None:
    """Validate a stack's settings and its roster, changing nothing."""
    stack_file, roster = _load_stack(stack)
    settings = stack_file.settings
    out.print(f"stack {stack}: settings valid; roster {settings.roster}: {len(roster)} mailboxes; "
              f"phase {settings.phase}", markup=False)


@app.command("preview")
def preview(
    stack: str = typer.Option(..., "-s", "--stack", help="Stack (environment) name."),
    as_json: bool = typer.Option(False, "--json", help="Print the evaluation as JSON."),
) -> None:
    """Evaluate the Pulumi program offline (Pulumi's mock engine) and show what it would declare.

    No AWS call is made and nothing is changed: ids and addresses that AWS
    would assign are stand-ins. Use `pulumi preview -s ENV` for the real diff.
    """
    from mailstack.infra.offline import evaluate, stack_config
    from mailstack.preview import summary

    stack_file, _ = _load_stack(stack)
    config, secrets = stack_config(stack_file.path)
    import pulumi

    try:
        evaluation = evaluate(config, project_dir=stack_file.project_dir, stack=stack, secret_keys=secrets,
                              region=stack_file.region or "eu-west-1")
    except pulumi.RunError as exc:
        err.print(f"stack {stack}: {exc}", markup=False)
        raise typer.Exit(EXIT_PROBLEMS) from None
    report = summary(evaluation)
    if as_json:
        out.print_json(json.dumps(report))
        return
    _print_preview(stack, report)


def _print_preview(stack: str, report: dict) -> None:
    out.print(f"[bold]mailstack preview -s {stack}[/bold]  (offline: Pulumi mock engine, no AWS calls)")
    table = Table("resource", "name", "what matters", title=f"{report['resource_count']} resources")
    for row in report["resources"]:
        table.add_row(row["type"], row["name"], row["detail"])
    out.print(table)
    dns = Table("name", "type", "value", "ttl", "why", title=f"DNS records of the {report['outputs']['phase']} phase")
    for rec in report["outputs"]["dns_records"]:
        dns.add_row(rec["name"], rec["type"], " ".join(rec["values"]), str(rec["ttl"]), rec["reason"])
    out.print(dns)
    facts = report["facts"]
    out.print(f"ports open to the internet: {', '.join(map(str, facts['open_ports']))}")
    out.print(f"user-data: {facts['user_data_bytes']} bytes (EC2 limit 16384); "
              f"bundle: {facts['bundle_bytes']} bytes, version {report['outputs']['bundle_version']}, "
              f"{report['outputs']['mailboxes']} mailboxes")
    out.print(f"[bold]next step:[/bold] {report['outputs']['next_step']}")


def main() -> None:
    app()


from mailstack.cli_sync import register as register_sync  # noqa: E402  (these import this module's helpers)
from mailstack.cli_verify import register as register_verify  # noqa: E402

register_sync(app)
register_verify(app)


if __name__ == "__main__":
    main()
