"""``mailstack roster check`` and ``mailstack roster hash``: the mailbox roster, checked and prepared."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mailstack.cli.common import StackOption, command, fail, out
from mailstack.problems import InputError


def register(app: typer.Typer) -> None:
    roster_app = typer.Typer(help="Check and prepare mailbox rosters.", no_args_is_help=True)
    command(roster_app, "check", roster_check)
    command(roster_app, "hash", roster_hash)
    app.add_typer(roster_app, name="roster")


def roster_check(
    file: Path = typer.Argument(..., help="Roster file: .csv, .yaml or .xlsx."),
    stack: Optional[str] = StackOption,
    domain: list[str] = typer.Option([], "--domain", "-d", help="Allowed mail domain (repeatable); default: the stack's."),
) -> None:
    """Report every problem of a roster, with file and line."""
    from mailstack.stack.roster import check_roster, load_roster
    from mailstack.stack.settings import load_stack_file

    try:
        domains = list(domain)
        default_quota = "1G"
        if stack:
            stack_file = load_stack_file(stack)
            domains = domains or stack_file.settings.domains
            default_quota = stack_file.settings.default_quota
        problems = check_roster(file, domains=domains or None, default_quota=default_quota)
    except InputError as exc:
        fail(exc)
    if problems:
        fail(InputError(f"roster {file}", problems))
    roster = load_roster(file, domains=domains or None, default_quota=default_quota)
    scope = f"domains {', '.join(domains)}" if domains else "any domain (give -s ENV or --domain to check domains)"
    out.print(f"roster {file}: {len(roster)} mailboxes, no problems; checked against {scope}", markup=False)


def roster_hash(
    source: Path = typer.Argument(..., help="Spreadsheet with plaintext passwords (.csv, .xlsx, .yaml)."),
    dest: Path = typer.Argument(..., help="Roster to write (.csv or .yaml) with the passwords hashed."),
    overwrite: bool = typer.Option(False, help="Replace DEST if it exists."),
) -> None:
    """Turn a spreadsheet of plaintext passwords into a roster of SHA512-CRYPT hashes."""
    from mailstack.stack.roster import hash_roster

    try:
        count = hash_roster(source, dest, overwrite=overwrite)
    except InputError as exc:
        fail(exc)
    out.print(f"wrote {dest}: {count} passwords hashed (SHA512-CRYPT). "
              f"Keep {source} out of git and delete it once the migration is done.", markup=False)
