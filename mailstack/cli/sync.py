"""``mailstack sync``: every mailbox copied from the old server to the new one, incrementally."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Optional

import typer

from mailstack.cli.common import (
    EXIT_FAILED, EXIT_PROBLEMS, AccountsOption, CafileOption, ExcludeOption, IncludeOption, JsonOption, StackOption,
    command, default_state_dir, err, folder_rules, imap_endpoint, load_stack, out, read_accounts, record_evidence,
)

SourceOption = typer.Option(None, "--source", help="Old server, imap:// or imaps://HOST[:PORT]; with -s: the stack's old_server.imap.")
TargetOption = typer.Option(None, "--target", help="New server, imap:// or imaps://HOST[:PORT]; with -s: imaps://<host.name>:993.")
JobsOption = typer.Option(4, "--jobs", "-j", min=1, max=64, help="Mailboxes synced at once (one connection to each side).")


def register(app: typer.Typer) -> None:
    command(app, "sync", sync)


def endpoints(stack: Optional[str], source: Optional[str], target: Optional[str], cafile: Optional[Path]):
    """(source, target, roster addresses or None, stack file or None): from the flags, else from the stack."""
    roster_addresses = stack_file = None
    if stack:
        stack_file, roster = load_stack(stack)
        settings = stack_file.settings
        source = source or str(settings.old_server.imap)
        target = target or f"imaps://{settings.host.name}:993"
        roster_addresses = {m.address.lower() for m in roster}
    if not source or not target:
        raise typer.BadParameter("give --source and --target, or -s ENV", param_hint="--source/--target")
    return imap_endpoint(source, cafile, "--source"), imap_endpoint(target, cafile, "--target"), roster_addresses, stack_file


def sync(
    stack: Optional[str] = StackOption,
    source: Optional[str] = SourceOption,
    target: Optional[str] = TargetOption,
    accounts_file: Optional[Path] = AccountsOption,
    jobs: int = JobsOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Change nothing; report what would be copied. Exit 0 only "
                                                          "if nothing is left to do."),
    as_json: bool = JsonOption,
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
    from mailstack.sync.report import differences, error_lines, report_json, report_table

    source_server, target_server, roster_addresses, stack_file = endpoints(stack, source, target, cafile)
    try:
        since_date = date.fromisoformat(since) if since else None
    except ValueError:
        raise typer.BadParameter(f"{since!r} is not a date YYYY-MM-DD", param_hint="--since") from None
    options = SyncOptions(state_dir=state_dir or default_state_dir(), rules=folder_rules(include, exclude, renames),
                          since=since_day(date.today(), since_date, max_age), dry_run=dry_run, jobs=jobs)
    accounts, problems = read_accounts(accounts_file, roster_addresses)
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

        from mailstack.migration.evidence import FinalSync

        record_evidence(stack_file, final_sync=FinalSync(at=datetime.now(timezone.utc),
                                                 differences=differences(results) + len(problems)))
    if problems:
        raise typer.Exit(EXIT_PROBLEMS)
    if not all(r.in_sync for r in results):
        raise typer.Exit(EXIT_FAILED)


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
