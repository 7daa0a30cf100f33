"""``mailstack backup`` and ``mailstack import``: old mailboxes saved to files, and exports brought in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from mailstack.cli.common import (
    EXIT_FAILED, EXIT_PROBLEMS, HELP, AccountsOption, CafileOption, DeadlineOption, ExcludeOption, IncludeOption,
    MailboxDeadlineOption, MaxMessageOption, StackOption, command, duration, err, fail, folder_rules, imap_endpoint,
    load_stack, out, read_accounts, record_evidence,
)
from mailstack.problems import InputError, Problem

PASSWORD_ENV = "MAILSTACK_IMAP_PASSWORD"


def register(app: typer.Typer) -> None:
    command(app, "backup", backup)
    import_app = typer.Typer(help="Import mbox or PST files into a mailbox on an IMAP server.", no_args_is_help=True)
    command(import_app, "mbox", import_mbox)
    command(import_app, "pst", import_pst)
    app.add_typer(import_app, name="import")


def backup(
    to: Path = typer.Option(..., "--to", help="Directory to write: one Maildir (or mbox files) per mailbox."),
    stack: Optional[str] = StackOption,
    source: Optional[str] = typer.Option(None, "--source", help=HELP["source"]),
    accounts_file: Optional[Path] = AccountsOption,
    fmt: str = typer.Option("maildir", "--format", help="maildir (bytes, flags, keywords and dates kept exactly) or mbox (one file per folder; flags in Status headers)."),
    cafile: Optional[Path] = CafileOption,
    include: list[str] = IncludeOption,
    exclude: list[str] = ExcludeOption,
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, max=64, help="Mailboxes backed up at once."),
    max_message_size: int = MaxMessageOption,
    deadline: Optional[str] = DeadlineOption,
    mailbox_deadline: str = MailboxDeadlineOption,
) -> None:
    """Save every source mailbox to local files before the migration (run again to add what is new)."""
    from mailstack.imap.wire import printable
    from mailstack.sync.backup import run_backup

    if fmt not in ("maildir", "mbox"):
        raise typer.BadParameter("maildir or mbox", param_hint="--format")
    stack_file = None
    if stack:
        stack_file, _ = load_stack(stack)
        source = source or str(stack_file.settings.old_server.imap)
    if not source:
        raise typer.BadParameter("give --source or -s ENV", param_hint="--source")
    server = imap_endpoint(source, cafile, "--source")
    accounts, problems = read_accounts(accounts_file, source_only=True)
    for problem in problems:
        err.print(f"accounts: {problem}", markup=False)
    results = run_backup(accounts, server, to, fmt=fmt, rules=folder_rules(include, exclude, []), jobs=jobs,
                         max_message_bytes=max_message_size * 1024 * 1024, deadline=duration(deadline, "--deadline"),
                         mailbox_deadline=duration(mailbox_deadline, "--mailbox-deadline"))
    failed = False
    for result in results:
        saved = (f"{result.folders} folders, {result.written} messages written, {result.present} already there "
                 f"-> {result.path}")
        if result.error:
            failed = True
            # What was saved is said too: a message whose flag was dropped is backed up, without that flag.
            anything_saved = result.folders or result.written or result.present
            state = f"backup INCOMPLETE ({saved})" if anything_saved else "NOT backed up"
            err.print(f"{result.user}: {state}: {printable(result.error, None)}", markup=False)
        else:
            out.print(f"{result.user}: {saved}", markup=False)
        for note in result.notes:
            out.print(f"{result.user}: {printable(note, None)}", markup=False)
    if stack_file is not None and not failed and not problems:
        from datetime import datetime, timezone

        record_evidence(stack_file, backup_at=datetime.now(timezone.utc))
    if problems:
        raise typer.Exit(EXIT_PROBLEMS)
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _password() -> str:
    password = os.environ.get(PASSWORD_ENV)
    if password:
        return password
    return typer.prompt("password of the target user", hide_input=True)


def _import(files: list[Path], target: str, user: str, folder: str, cafile: Optional[Path], kind: str) -> None:
    from mailstack.sync.importer import run_import

    server = imap_endpoint(target, cafile, "--target")
    for path in files:
        if not path.is_file():
            fail(InputError(f"{kind} import", [Problem(str(path), "no such file")]))
    try:
        results = run_import(files, kind, server, user, _password(), folder)
    except InputError as exc:
        fail(exc)
    failed = False
    for result in results:
        line = f"{result.source} -> {result.folder}: {result.copied} copied, {result.present} already there"
        if result.error:
            failed = True
            err.print(f"{line}; NOT complete: {result.error}", markup=False)
        else:
            out.print(line, markup=False)
    if failed:
        raise typer.Exit(EXIT_FAILED)


ImportTarget = typer.Option(..., "--target", help="IMAP server, imap:// or imaps://HOST[:PORT].")
ImportUser = typer.Option(..., "--user", help=f"Mailbox to import into; its password from ${PASSWORD_ENV} or a prompt.")


def import_mbox(
    files: list[Path] = typer.Argument(..., help="mbox files."),
    target: str = ImportTarget,
    user: str = ImportUser,
    folder: str = typer.Option("INBOX", "--folder", help="Folder to import into ('/' between levels)."),
    cafile: Optional[Path] = CafileOption,
) -> None:
    """Import mbox files into a folder; messages already there are not imported twice."""
    _import(files, target, user, folder, cafile, "mbox")


def import_pst(
    files: list[Path] = typer.Argument(..., help="Outlook .pst files."),
    target: str = ImportTarget,
    user: str = ImportUser,
    folder: str = typer.Option("Imported", "--folder", help="Folder under which the PST's folders are created."),
    cafile: Optional[Path] = CafileOption,
) -> None:
    """Import Outlook PST files (converted by readpst from pst-utils), keeping their folders."""
    _import(files, target, user, folder, cafile, "pst")
