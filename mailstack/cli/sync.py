"""``mailstack sync``: every mailbox copied from the old server to the new one, incrementally."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Optional

import typer

from mailstack.cli.common import (
    EXIT_FAILED, EXIT_PROBLEMS, AccountsOption, CafileOption, DeadlineOption, ExcludeOption, IncludeOption, JsonOption,
    MailboxDeadlineOption, MapInvalidOption, MaxMessageOption, StackOption, command, default_state_dir, duration, err,
    fail, folder_rules, imap_endpoint, load_stack, out, print_json, read_accounts, record_evidence,
)

SourceOption = typer.Option(None, "--source", help="Old server, imap:// or imaps://HOST[:PORT]; with -s: the stack's old_server.imap.")
TargetOption = typer.Option(None, "--target", help="New server, imap:// or imaps://HOST[:PORT]; with -s: imaps://<host.name>:993.")
JobsOption = typer.Option(4, "--jobs", "-j", min=1, max=64, help="Mailboxes synced at once (one connection to each side).")


def register(app: typer.Typer) -> None:
    command(app, "sync", sync)


def endpoints(stack: Optional[str], source: Optional[str], target: Optional[str], cafile: Optional[Path]):
    """(source, target, roster {address: protocol} or None, stack file or None): from the flags, else the stack."""
    roster_protocols = stack_file = None
    if stack:
        stack_file, roster = load_stack(stack)
        settings = stack_file.settings
        source = source or str(settings.old_server.imap)
        target = target or f"imaps://{settings.host.name}:993"
        roster_protocols = {m.address.lower(): m.protocol for m in roster}
    if not source or not target:
        raise typer.BadParameter("give --source and --target, or -s ENV", param_hint="--source/--target")
    return imap_endpoint(source, cafile, "--source"), imap_endpoint(target, cafile, "--target"), roster_protocols, stack_file


def pop3_plan(choice: str, pop3: Optional[str], stack_file, roster_protocols, cafile: Optional[Path]):
    """(old server's POP3 endpoint or None, which target addresses get their UIDLs carried: a set, or None for all).

    ``pop`` (the default) means the roster's POP users with -s, and every
    account without a stack when --pop3 is given; ``all`` every account;
    ``none`` no one. POP users and no POP3 endpoint is a usage error: their
    clients would download everything again.
    """
    from mailstack.imap.endpoint import POP_SCHEMES, parse_endpoint

    if choice == "none":
        return None, set()
    url = pop3 or (str(stack_file.settings.old_server.pop) if stack_file and stack_file.settings.old_server.pop else None)
    wanted = None
    if choice == "pop" and roster_protocols is not None:
        wanted = {address for address, protocol in roster_protocols.items() if protocol == "pop"}
    if url is None:
        if choice == "all" or wanted:
            count = "every account" if choice == "all" else f"{len(wanted)} roster mailbox(es) use POP"
            raise typer.BadParameter(f"{count}: give the old server's POP3 endpoint (pop3s://HOST[:PORT]) or set "
                                     "mailstack:old_server.pop, so that their UIDLs are kept; or --pop3-uidls none",
                                     param_hint="--pop3")
        return None, set()
    try:
        endpoint = parse_endpoint(url, POP_SCHEMES).trusting(str(cafile) if cafile else None)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--pop3") from None
    return endpoint, wanted


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
    map_invalid: bool = MapInvalidOption,
    verify: bool = typer.Option(False, "--verify", help="Also compare every copied message's flags and keywords on "
                                                         "both sides and add on the new server what it lacks "
                                                         "(after an index loss, for example); says what it repaired."),
    since: Optional[str] = typer.Option(None, "--since", help="Only messages received on or after YYYY-MM-DD."),
    max_age: Optional[int] = typer.Option(None, "--max-age", min=1, help="Only messages of the last N days."),
    state_dir: Path = typer.Option(None, "--state-dir", help="Where per-mailbox sync state is kept "
                                                             "[default: $XDG_STATE_HOME/mailstack/sync]."),
    max_message_size: int = MaxMessageOption,
    deadline: Optional[str] = DeadlineOption,
    mailbox_deadline: str = MailboxDeadlineOption,
    pop3: Optional[str] = typer.Option(None, "--pop3", help="Old server's POP3, pop3[s]://HOST[:PORT], to keep POP "
                                                             "users' UIDLs; with -s: the stack's old_server.pop."),
    pop3_uidls: str = typer.Option("pop", "--pop3-uidls", help="Whose POP3 UIDLs to keep: pop (the roster's POP "
                                                               "users; without -s every account, given --pop3), "
                                                               "all, or none."),
    reverse: bool = typer.Option(False, "--reverse", help="After a rollback: copy what reached the new host (the "
                                                          "target) back to the old server (the source), with the "
                                                          "same accounts file."),
    shard: Optional[str] = typer.Option(None, "--shard", metavar="K/N",
                                        help="Sync only shard K of N (e.g. 2/3): N machines, each with the same "
                                             "accounts file and its own K, share one migration without overlap. "
                                             "Each keeps its own state and, with -s, its own evidence file."),
) -> None:
    """Copy every mailbox from the old server to the new one; run again to copy only what changed.

    Folders (with subscriptions), messages byte for byte, flags and dates are
    copied; a message already copied is never copied twice, and flag changes
    made on the old server are carried over. Nothing is deleted on either side.
    With --reverse the new host is read and the old server written: the mail
    delivered to the new host during a cutover goes back after a rollback.
    With --shard K/N only the accounts of shard K are synced (a stable split
    by the source user), so N machines can share the work.
    """
    from mailstack.sync.engine import SyncOptions, run_sync
    from mailstack.sync.plan import since_day
    from mailstack.sync.report import ShardCoverage, error_lines, note_lines, report_json, report_table

    chosen_shard = _shard(shard, reverse)
    source_server, target_server, roster_protocols, stack_file = endpoints(stack, source, target, cafile)
    roster_addresses = set(roster_protocols) if roster_protocols is not None else None
    if pop3_uidls not in ("pop", "all", "none"):
        raise typer.BadParameter(f"{pop3_uidls!r}: give pop, all or none", param_hint="--pop3-uidls")
    pop_server, pop_users = (None, set()) if reverse or dry_run else pop3_plan(pop3_uidls, pop3, stack_file,
                                                                               roster_protocols, cafile)
    try:
        since_date = date.fromisoformat(since) if since else None
    except ValueError:
        raise typer.BadParameter(f"{since!r} is not a date YYYY-MM-DD", param_hint="--since") from None
    state_root = state_dir or default_state_dir()
    options = SyncOptions(state_dir=state_root / f"shard-{chosen_shard.slug}" if chosen_shard else state_root,
                          rules=folder_rules(include, exclude, renames, map_invalid),
                          since=since_day(date.today(), since_date, max_age), dry_run=dry_run, jobs=jobs,
                          max_message_bytes=max_message_size * 1024 * 1024, deadline=duration(deadline, "--deadline"),
                          mailbox_deadline=duration(mailbox_deadline, "--mailbox-deadline"), verify=verify)
    accounts, problems = read_accounts(accounts_file, roster_addresses)
    for problem in problems:
        err.print(f"accounts: {problem}", markup=False)
    coverage = None
    if chosen_shard:
        from mailstack.sync.accounts import partition

        accounts, skipped = partition(accounts, chosen_shard)
        coverage = ShardCoverage(chosen_shard.key, len(accounts), skipped)
        if not as_json:
            err.print(coverage.line(), markup=False)
    if reverse:
        from mailstack.sync.reverse import reversed_accounts

        accounts, source_server, target_server = reversed_accounts(accounts), target_server, source_server
    with _progress(enabled=not as_json) as progress:
        results = run_sync(accounts, source_server, target_server, options, progress)
    uidls = _carry_uidls(accounts, results, source_server, target_server, pop_server, pop_users, options, jobs)
    if as_json:
        print_json({**report_json(results, problems, dry_run=dry_run, shard=coverage),
                    "pop3_uidls": [u.to_dict() for u in uidls]})
    else:
        out.print(report_table(results, dry_run=dry_run))
        if coverage:
            out.print(coverage.line(), markup=False)
        for line in note_lines(results):
            out.print(line, markup=False)
        for line in error_lines(results):
            err.print(line, markup=False)
        for u in uidls:
            seen = u.error or f"{u.carried} of {u.listed} POP3 UIDLs kept" + (
                f" ({u.unmatched} not copied to the new INBOX yet)" if u.unmatched else "")
            (err if u.error else out).print(f"{u.source_user} -> {u.target_user}: {seen}", markup=False)
    if stack_file is not None and not dry_run:
        _record(stack_file, results, problems, reverse=reverse, partial=partial_scope(include, since, max_age),
                shard=coverage)
    if problems:
        raise typer.Exit(EXIT_PROBLEMS)
    if not all(r.in_sync for r in results) or any(u.error for u in uidls):
        raise typer.Exit(EXIT_FAILED)


def _carry_uidls(accounts, results, source, target, pop_server, pop_users, options, jobs: int) -> list:
    """After the copy: the old POP3 UIDLs of the chosen accounts that are in sync, left on the new host."""
    if pop_server is None:
        return []
    from mailstack.sync.pop3uidl import carry_all

    synced = {(r.source_user, r.target_user) for r in results if r.in_sync}
    chosen = [a for a in accounts if (a.source_user, a.target_user) in synced
              and (pop_users is None or a.target_user.lower() in pop_users)]
    return carry_all(chosen, source, target, pop_server, options.state_dir, jobs) if chosen else []


def partial_scope(include: list[str], since: Optional[str], max_age: Optional[int]) -> str | None:
    """Why a run does not cover whole mailboxes (a final sync must), or None."""
    left_out = [f"--include {' '.join(include)}"] if include and include != ["*"] else []
    left_out += [f"--since {since}"] if since else []
    left_out += [f"--max-age {max_age}"] if max_age else []
    return ", ".join(left_out) or None


def _shard(text: Optional[str], reverse: bool):
    """The --shard K/N asked for, or None; a bad one is a usage error before anything runs."""
    if text is None:
        return None
    from mailstack.sync.accounts import parse_shard

    if reverse:
        raise typer.BadParameter("a reverse sync copies back only the mail of the cutover days: run it on one machine, "
                                 "without --shard", param_hint="--shard")
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--shard") from None


def _record(stack_file, results, problems, *, reverse: bool, partial: str | None, shard=None) -> None:
    """Each mailbox the run covered, under its roster address (the accounts file's target_user), with the time.

    A shard's run goes to its own evidence file, so that N machines never write the same one.
    """
    from datetime import datetime, timezone

    from mailstack.sync.report import sync_coverage

    parts = sync_coverage(results, len(problems), datetime.now(timezone.utc), reverse=reverse, partial=partial,
                          shard=shard)
    if shard is None:
        record_evidence(stack_file, **parts)
        return
    from mailstack.migration.evidence import evidence_path, record, shard_path
    from mailstack.problems import InputError

    path = evidence_path(stack_file.project_dir, stack_file.env)
    try:
        record(path, **parts)
    except InputError as exc:
        fail(exc)
    err.print(f"recorded in {shard_path(path, shard.key)}", markup=False)


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
