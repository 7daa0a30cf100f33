"""``mailstack roster check``, ``hash`` and ``accounts``: the mailbox roster, checked and prepared from one sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mailstack.cli.common import StackOption, command, fail, out
from mailstack.problems import InputError, Problem


def register(app: typer.Typer) -> None:
    roster_app = typer.Typer(help="Check and prepare mailbox rosters.", no_args_is_help=True)
    command(roster_app, "check", roster_check)
    command(roster_app, "hash", roster_hash)
    command(roster_app, "accounts", roster_accounts)
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


def roster_accounts(
    source: Path = typer.Argument(..., help="The operators' spreadsheet (.csv or .xlsx) with plaintext passwords."),
    dest: Path = typer.Argument(..., help="Accounts file to write (CSV, mode 0600), outside the git work tree."),
    source_column: Optional[str] = typer.Option(None, "--source-column", help="Header of the column holding the old "
                                                "address (default: old_address, 旧メールアドレス...; else the new address)."),
    source_password_column: Optional[str] = typer.Option(None, "--source-password-column", help="Header of the column "
                                                         "holding the old password (default: old_password, 旧パスワード...; "
                                                         "else the new password)."),
    stack: Optional[str] = StackOption,
    overwrite: bool = typer.Option(False, help="Replace DEST if it exists."),
) -> None:
    """Write the sync's accounts file (old address and password -> new address and password) from the same sheet.

    Rows whose password is `generate` get the generated password when MAILSTACK_PASSWORD_SEED holds the
    stack's seed; a hash row keeps the old password when the hash matches it.
    """
    import os

    from mailstack.files import work_tree_of, write_private
    from mailstack.stack.passwords import SEED_ENV, seed_problem
    from mailstack.stack.roster.sheet import SourceColumns, accounts_csv, accounts_from_sheet
    from mailstack.stack.settings import load_stack_file

    problems = []
    tree = work_tree_of(dest)
    if tree is not None:
        problems.append(Problem(str(dest), f"is inside the git work tree {tree}: the accounts file holds plaintext "
                                           "passwords and must never be committed; write it outside, e.g. ~/accounts.csv"))
    elif dest.exists() and not overwrite:
        problems.append(Problem(str(dest), "already exists: choose a new file name, or give --overwrite"))
    elif not dest.parent.is_dir():
        problems.append(Problem(str(dest), f"its directory {dest.parent} does not exist"))
    seed = os.environ.get(SEED_ENV) or None
    if seed and seed_problem(seed):
        problems.append(Problem(SEED_ENV, seed_problem(seed)))
    try:
        domains, default_quota = None, "1G"
        if stack:
            settings = load_stack_file(stack).settings
            domains, default_quota = settings.domains, settings.default_quota
        rows, found = accounts_from_sheet(source, SourceColumns(source_column, source_password_column),
                                          domains=domains, default_quota=default_quota, seed=seed)
    except InputError as exc:
        fail(exc)
    problems += found
    if not rows and not problems:
        problems.append(Problem(str(source), "no mailbox rows"))
    if problems:
        fail(InputError(f"accounts from {source} (nothing written)", problems))
    write_private(dest, accounts_csv(rows), overwrite=overwrite)
    out.print(f"wrote {dest}: {len(rows)} accounts (mode 0600). It holds plaintext passwords: "
              f"give it to mailstack sync with --accounts, and delete it after the migration.", markup=False)
