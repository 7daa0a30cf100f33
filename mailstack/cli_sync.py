"""``mailstack sync``, ``mailstack backup`` and ``mailstack import``: moving the mail itself.

Exit codes: 0 every mailbox in sync (or backed up, imported), 1 the input has
problems (each with file and line), 2 wrong usage, 3 some mailbox is not in
sync (each with its reason).
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Optional

import typer

from mailstack.console import EXIT_PROBLEMS, _fail, err, out
from mailstack.problems import InputError, Problem

EXIT_NOT_IN_SYNC = 3
ACCOUNTS_ENV = "MAILSTACK_SYNC_ACCOUNTS"
PASSWORD_ENV = "MAILSTACK_IMAP_PASSWORD"

SourceOption = typer.Option(None, "--source", help="Old server, imap:// or imaps://HOST[:PORT]; with -s: the stack's old_server.imap.")
TargetOption = typer.Option(None, "--target", help="New server, imap:// or imaps://HOST[:PORT]; with -s: imaps://<host.name>:993.")
AccountsOption = typer.Option(None, "--accounts", envvar=ACCOUNTS_ENV, show_envvar=True,
                              help="CSV: source_user,source_password,target_user,target_password. Plain passwords: "
                                   "keep it out of git.")
StackOption = typer.Option(None, "-s", "--stack", help="Stack (environment): endpoints from stacks/Pulumi.<env>.yaml.")
CafileOption = typer.Option(None, "--cafile", help="CA certificates (PEM) to trust for imaps, besides the system's.")
JobsOption = typer.Option(4, "--jobs", "-j", min=1, max=64, help="Mailboxes synced at once (one connection to each side).")
IncludeOption = typer.Option([], "--include", help="Only folders matching this pattern (repeatable; '*' any, '/' between levels).")
ExcludeOption = typer.Option([], "--exclude", help="Leave out folders matching this pattern (repeatable).")


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mailstack" / "sync"


def register(app: typer.Typer) -> None:
    """Add sync, backup and import to the mailstack command."""
    app.command("sync")(sync)
    app.command("backup")(backup)
    import_app = typer.Typer(help="Import mbox or PST files into a mailbox on an IMAP server.", no_args_is_help=True)
    import_app.command("mbox")(import_mbox)
    import_app.command("pst")(import_pst)
    app.add_typer(import_app, name="import")


# ---------------------------------------------------------------- endpoints and accounts


def _server(url: str, cafile: Optional[Path], what: str):
    from mailstack.settings import parse_endpoint
    from mailstack.sync.engine import Server

    try:
        endpoint = parse_endpoint(url, ("imap", "imaps"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=what) from None
    return Server(endpoint.host, endpoint.port, endpoint.tls, str(cafile) if cafile else None)


def _endpoints(stack: Optional[str], source: Optional[str], target: Optional[str], cafile: Optional[Path]):
    """(source, target, roster addresses or None, stack file or None): from the flags, else from the stack."""
    roster_addresses = stack_file = None
    if stack:
        from mailstack.console import _load_stack

        stack_file, roster = _load_stack(stack)
        settings = stack_file.settings
        source = source or str(settings.old_server.imap)
        target = target or f"imaps://{settings.host.name}:993"
        roster_addresses = {m.address.lower() for m in roster}
    if not source or not target:
        raise typer.BadParameter("give --source and --target, or -s ENV", param_hint="--source/--target")
    return _server(source, cafile, "--source"), _server(target, cafile, "--target"), roster_addresses, stack_file


def _record(stack_file, **parts) -> None:
    """Write what was measured into the stack's evidence file (read by the decommission gate)."""
    from mailstack.evidence import evidence_path, record

    path = evidence_path(stack_file.project_dir, stack_file.env)
    record(path, **parts)
    err.print(f"recorded in {path}", markup=False)


def _accounts(path: Optional[Path], roster_addresses: Optional[set[str]], *, need_target: bool = True):
    from mailstack.sync.accounts import read_accounts

    if path is None:
        raise typer.BadParameter(f"give --accounts FILE (or set {ACCOUNTS_ENV})", param_hint="--accounts")
    try:
        accounts, problems = read_accounts(path)
    except InputError as exc:
        _fail(exc)
    if roster_addresses is not None and need_target:
        kept = []
        for account in accounts:
            if account.target_user.lower() in roster_addresses:
                kept.append(account)
            else:
                problems.append(Problem(account.where, f"target_user {account.target_user!r} is not in the stack's roster"))
        accounts = kept
    if not accounts:
        _fail(InputError(f"accounts file {path}", problems or [Problem(str(path), "no account rows")]))
    return accounts, problems


def _rules(include: list[str], exclude: list[str], renames: list[str]):
    from mailstack.sync.plan import FolderRules, parse_rename

    try:
        parsed = tuple(parse_rename(r) for r in renames)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--map") from None
    return FolderRules(tuple(include) or ("*",), tuple(exclude), parsed)


# ---------------------------------------------------------------- sync


def sync(
    stack: Optional[str] = StackOption,
    source: Optional[str] = SourceOption,
    target: Optional[str] = TargetOption,
    accounts_file: Optional[Path] = AccountsOption,
    jobs: int = JobsOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Change nothing; report what would be copied. Exit 0 only "
                                                          "if nothing is left to do."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    cafile: Optional[Path] = CafileOption,
    include: list[str] = IncludeOption,
    exclude: list[str] = ExcludeOption,
    renames: list[str] = typer.Option([], "--map", help="Rename a folder and its subfolders: OLD=NEW, e.g. "
                                                        "'Sent Items=Sent' (repeatable)."),
    since: Optional[str] = typer.Option(None, "--since", help="Only messages received on or after YYYY-MM-DD."),
    max_age: Optional[int] = typer.Option(None, "--max-age", min=1, help="Only messages of the last N days."),
    state_dir: Path = typer.Option(None, "--state-dir", help="Where per-mailbox sync state is kept "
                                                             "[default: $XDG_STATE_HOME/mailstack/sync]."),
) -> None:
    """Copy every mailbox from the old server to the new one; run again to copy only what changed.

    Folders (with subscriptions), messages byte for byte, flags and dates are
    copied; a message already copied is never copied twice, and flag changes
    made on the old server are carried over. Nothing is deleted on either side.
    """
    from mailstack.sync.engine import SyncOptions, run_sync
    from mailstack.sync.plan import since_day
    from mailstack.sync.report import error_lines, report_json, report_table

    source_server, target_server, roster_addresses, stack_file = _endpoints(stack, source, target, cafile)
    try:
        since_date = date.fromisoformat(since) if since else None
    except ValueError:
        raise typer.BadParameter(f"{since!r} is not a date YYYY-MM-DD", param_hint="--since") from None
    options = SyncOptions(state_dir=state_dir or default_state_dir(), rules=_rules(include, exclude, renames),
                          since=since_day(date.today(), since_date, max_age), dry_run=dry_run, jobs=jobs)
    accounts, problems = _accounts(accounts_file, roster_addresses)
    for problem in problems:
        err.print(f"accounts: {problem}", markup=False)
    with _progress(enabled=not as_json) as progress:
        results = run_sync(accounts, source_server, target_server, options, progress)
    if as_json:
        out.print_json(json.dumps(report_json(results, problems, dry_run=dry_run)))
    else:
        out.print(report_table(results, dry_run=dry_run))
        for line in error_lines(results):
            err.print(line, markup=False)
    if stack_file is not None and not dry_run:
        from datetime import datetime, timezone

        from mailstack.evidence import FinalSync

        _record(stack_file, final_sync=FinalSync(at=datetime.now(timezone.utc),
                                                 differences=differences(results) + len(problems)))
    if problems:
        raise typer.Exit(EXIT_PROBLEMS)
    if not all(r.in_sync for r in results):
        raise typer.Exit(EXIT_NOT_IN_SYNC)


def differences(results) -> int:
    """What a sync found to do: copies, flag updates, and mailboxes it could not bring in sync."""
    return sum(r.total("copied") + r.total("flag_updates") + (0 if r.in_sync else 1) for r in results)


class _RichProgress:
    """Overall and per-mailbox bars (messages and bytes), on stderr."""

    def __init__(self):
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[messages]}"),
                                 DownloadColumn(), TimeElapsedColumn(), console=err, transient=True)
        self.overall = self.progress.add_task("all mailboxes", total=0, messages="0/0 msgs")
        self.tasks: dict[str, int] = {}
        self.counts: dict[object, list[int]] = {self.overall: [0, 0]}

    def _task(self, mailbox: str) -> int:
        if mailbox not in self.tasks:
            self.tasks[mailbox] = self.progress.add_task(mailbox, total=0, messages="0/0 msgs")
            self.counts[self.tasks[mailbox]] = [0, 0]
        return self.tasks[mailbox]

    def _update(self, task, messages: int, size: int, *, planned: bool) -> None:
        done, total = self.counts[task]
        self.counts[task] = [done, total + messages] if planned else [done + messages, total]
        done, total = self.counts[task]
        if planned:
            self.progress.update(task, total=(self.progress.tasks[task].total or 0) + size, messages=f"{done}/{total} msgs")
        else:
            self.progress.update(task, advance=size, messages=f"{done}/{total} msgs")

    def planned(self, mailbox: str, messages: int, size: int) -> None:
        for task in (self._task(mailbox), self.overall):
            self._update(task, messages, size, planned=True)

    def advanced(self, mailbox: str, messages: int, size: int) -> None:
        for task in (self._task(mailbox), self.overall):
            self._update(task, messages, size, planned=False)

    def finished(self, mailbox: str, result) -> None:
        task = self._task(mailbox)
        state = "in sync" if result.in_sync else "NOT in sync"
        self.progress.update(task, description=f"{mailbox} ({state})")


class _progress:
    def __init__(self, enabled: bool):
        self.enabled = enabled and err.is_terminal
        self.shown = None

    def __enter__(self):
        if not self.enabled:
            return None
        self.shown = _RichProgress()
        self.shown.progress.start()
        return self.shown

    def __exit__(self, *exc) -> None:
        if self.shown is not None:
            self.shown.progress.stop()


# ---------------------------------------------------------------- backup


def backup(
    to: Path = typer.Option(..., "--to", help="Directory to write: one Maildir (or mbox files) per mailbox."),
    stack: Optional[str] = StackOption,
    source: Optional[str] = SourceOption,
    accounts_file: Optional[Path] = AccountsOption,
    fmt: str = typer.Option("maildir", "--format", help="maildir (bytes, flags, keywords and dates kept exactly) or mbox (one file per folder; flags in Status headers)."),
    cafile: Optional[Path] = CafileOption,
    include: list[str] = IncludeOption,
    exclude: list[str] = ExcludeOption,
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, max=64, help="Mailboxes backed up at once."),
) -> None:
    """Save every source mailbox to local files before the migration (run again to add what is new)."""
    from mailstack.backup import run_backup

    if fmt not in ("maildir", "mbox"):
        raise typer.BadParameter("maildir or mbox", param_hint="--format")
    stack_file = None
    if stack:
        from mailstack.console import _load_stack

        stack_file, _ = _load_stack(stack)
        source = source or str(stack_file.settings.old_server.imap)
    if not source:
        raise typer.BadParameter("give --source or -s ENV", param_hint="--source")
    server = _server(source, cafile, "--source")
    accounts, problems = _accounts(accounts_file, None, need_target=False)
    for problem in problems:
        err.print(f"accounts: {problem}", markup=False)
    results = run_backup(accounts, server, to, fmt=fmt, rules=_rules(include, exclude, []), jobs=jobs)
    failed = False
    for result in results:
        if result.error:
            failed = True
            err.print(f"{result.user}: NOT backed up: {result.error}", markup=False)
        else:
            out.print(f"{result.user}: {result.folders} folders, {result.written} messages written, "
                      f"{result.present} already there -> {result.path}", markup=False)
    if stack_file is not None and not failed and not problems:
        from datetime import datetime, timezone

        _record(stack_file, backup_at=datetime.now(timezone.utc))
    if problems:
        raise typer.Exit(EXIT_PROBLEMS)
    if failed:
        raise typer.Exit(EXIT_NOT_IN_SYNC)


# ---------------------------------------------------------------- import


def _password() -> str:
    password = os.environ.get(PASSWORD_ENV)
    if password:
        return password
    return typer.prompt("password of the target user", hide_input=True)


def _import(files: list[Path], target: str, user: str, folder: str, cafile: Optional[Path], kind: str) -> None:
    from mailstack.mailimport import run_import

    server = _server(target, cafile, "--target")
    for path in files:
        if not path.is_file():
            _fail(InputError(f"{kind} import", [Problem(str(path), "no such file")]))
    try:
        results = run_import(files, kind, server, user, _password(), folder)
    except InputError as exc:
        _fail(exc)
    failed = False
    for result in results:
        line = f"{result.source} -> {result.folder}: {result.copied} copied, {result.present} already there"
        if result.error:
            failed = True
            err.print(f"{line}; NOT complete: {result.error}", markup=False)
        else:
            out.print(line, markup=False)
    if failed:
        raise typer.Exit(EXIT_NOT_IN_SYNC)


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
