"""``mailstack sync``: every mailbox copied from the old server to the new one, incrementally.

Its options are parsed here with argparse, not typer: the run an operator
repeats all through the overlap starts without loading typer, rich or
pydantic (``mailstack sync`` goes straight to :func:`main`; the typer app
hands it its arguments).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path
from typing import Optional

from mailstack.cli.basics import (
    ACCOUNTS_ENV, EXIT_CODES, EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, HELP, UsageError, default_state_dir,
    duration, fail, folder_rules, imap_endpoint, load_stack, print_json, read_accounts, record_evidence, say,
)

SUMMARY = "Copy every mailbox from the old server to the new one; run again to copy only what changed."
DESCRIPTION = SUMMARY + """

Folders (with subscriptions), messages byte for byte, flags and dates are copied; a message already copied is never
copied twice, and flag changes made on the old server are carried over. Nothing is deleted on either side. With
--reverse the new host is read and the old server written: the mail delivered to the new host during a cutover goes
back after a rollback. With --shard K/N only the accounts of shard K are synced (a stable split by the source user),
so N machines can share the work."""


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
        raise UsageError("give --source and --target, or -s ENV", "--source/--target")
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
            raise UsageError(f"{count}: give the old server's POP3 endpoint (pop3s://HOST[:PORT]) or set "
                             "mailstack:old_server.pop, so that their UIDLs are kept; or --pop3-uidls none", "--pop3")
        return None, set()
    try:
        endpoint = parse_endpoint(url, POP_SCHEMES).trusting(str(cafile) if cafile else None)
    except ValueError as exc:
        raise UsageError(str(exc), "--pop3") from None
    return endpoint, wanted


def parser() -> argparse.ArgumentParser:
    """The options of ``mailstack sync``."""
    p = argparse.ArgumentParser(prog="mailstack sync", description=DESCRIPTION, epilog=EXIT_CODES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-s", "--stack", metavar="ENV", help=HELP["stack"])
    p.add_argument("--source", help=HELP["source"])
    p.add_argument("--target", help="New server, imap:// or imaps://HOST[:PORT]; with -s: imaps://<host.name>:993.")
    p.add_argument("--accounts", type=Path, metavar="FILE", default=os.environ.get(ACCOUNTS_ENV) or None,
                   help=f"{HELP['accounts']} [env var: {ACCOUNTS_ENV}]")
    p.add_argument("-j", "--jobs", type=_bounded("--jobs", 1, 64), default=4,
                   help="Mailboxes synced at once (one connection to each side). [default: 4; 1 to 64]")
    p.add_argument("--dry-run", action="store_true",
                   help="Change nothing; report what would be copied. Exit 0 only if nothing is left to do.")
    p.add_argument("--json", dest="as_json", action="store_true", help=HELP["json"])
    p.add_argument("--cafile", type=Path, metavar="PEM", help=HELP["cafile"])
    p.add_argument("--include", action="append", default=[], metavar="PATTERN", help=HELP["include"])
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN", help=HELP["exclude"])
    p.add_argument("--map", dest="renames", action="append", default=[], metavar="OLD=NEW",
                   help="Rename a folder and its subfolders: OLD=NEW, e.g. 'Sent Items=Sent' (repeatable).")
    p.add_argument("--map-invalid", action="store_true", help=HELP["map_invalid"])
    p.add_argument("--verify", action="store_true",
                   help="Also compare every copied message's flags and keywords on both sides and add on the new "
                        "server what it lacks (after an index loss, for example); says what it repaired.")
    p.add_argument("--since", metavar="YYYY-MM-DD", help="Only messages received on or after YYYY-MM-DD.")
    p.add_argument("--max-age", type=_bounded("--max-age", 1, None), metavar="DAYS",
                   help="Only messages of the last N days.")
    p.add_argument("--state-dir", type=Path, metavar="DIR", help="Where per-mailbox sync state is kept "
                                                                 "[default: $XDG_STATE_HOME/mailstack/sync].")
    p.add_argument("--max-message-size", type=_bounded("--max-message-size", 1, 4096), default=64, metavar="MIB",
                   help=HELP["max_message_size"] + " [default: 64]")
    p.add_argument("--deadline", metavar="DURATION", help=HELP["deadline"])
    p.add_argument("--mailbox-deadline", default="6h", metavar="DURATION",
                   help=HELP["mailbox_deadline"] + " [default: 6h]")
    p.add_argument("--pop3", metavar="URL", help="Old server's POP3, pop3[s]://HOST[:PORT], to keep POP users' "
                                                 "UIDLs; with -s: the stack's old_server.pop.")
    p.add_argument("--pop3-uidls", default="pop", metavar="WHOSE",
                   help="Whose POP3 UIDLs to keep: pop (the roster's POP users; without -s every account, given "
                        "--pop3), all, or none. [default: pop]")
    p.add_argument("--reverse", action="store_true",
                   help="After a rollback: copy what reached the new host (the target) back to the old server (the "
                        "source), with the same accounts file.")
    p.add_argument("--shard", metavar="K/N",
                   help="Sync only shard K of N (e.g. 2/3): N machines, each with the same accounts file and its own "
                        "K, share one migration without overlap. Each keeps its own state and, with -s, its own "
                        "evidence file.")
    return p


def _bounded(option: str, low: int, high: Optional[int]):
    """An argparse type: a whole number within [low, high] (no upper bound when ``high`` is None)."""
    def number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is not in the range {low} to {high}" if high is not None
                                             else f"{value} is less than {low}")
        return value
    return number


def main(argv: list[str]) -> int:
    """``mailstack sync ARGS``: the exit code (0 in sync, 1 input problems, 2 wrong usage, 3 not in sync)."""
    p = parser()
    args = p.parse_args(argv)
    try:
        return sync(args)
    except UsageError as exc:
        p.print_usage(sys.stderr)
        say(f"{p.prog}: error: Invalid value for {exc.option}: {exc.message}", stderr=True)
        return EXIT_USAGE


def sync(args: argparse.Namespace) -> int:
    """The run: every check of the options first, then the copy, the report and (with -s) the evidence."""
    from mailstack.sync.engine import SyncOptions, run_sync
    from mailstack.sync.plan import since_day
    from mailstack.sync.report import ShardCoverage, error_lines, note_lines, report_json

    chosen_shard = _shard(args.shard, args.reverse)
    source_server, target_server, roster_protocols, stack_file = endpoints(args.stack, args.source, args.target,
                                                                           args.cafile)
    roster_addresses = set(roster_protocols) if roster_protocols is not None else None
    if args.pop3_uidls not in ("pop", "all", "none"):
        raise UsageError(f"{args.pop3_uidls!r}: give pop, all or none", "--pop3-uidls")
    pop_server, pop_users = (None, set()) if args.reverse or args.dry_run else pop3_plan(
        args.pop3_uidls, args.pop3, stack_file, roster_protocols, args.cafile)
    try:
        since_date = date.fromisoformat(args.since) if args.since else None
    except ValueError:
        raise UsageError(f"{args.since!r} is not a date YYYY-MM-DD", "--since") from None
    state_root = args.state_dir or default_state_dir()
    options = SyncOptions(state_dir=state_root / f"shard-{chosen_shard.slug}" if chosen_shard else state_root,
                          rules=folder_rules(args.include, args.exclude, args.renames, args.map_invalid),
                          since=since_day(date.today(), since_date, args.max_age), dry_run=args.dry_run,
                          jobs=args.jobs, max_message_bytes=args.max_message_size * 1024 * 1024,
                          deadline=duration(args.deadline, "--deadline"),
                          mailbox_deadline=duration(args.mailbox_deadline, "--mailbox-deadline"), verify=args.verify)
    accounts, problems = read_accounts(args.accounts, roster_addresses)
    for problem in problems:
        say(f"accounts: {problem}", stderr=True)
    coverage = None
    if chosen_shard:
        from mailstack.sync.accounts import partition

        accounts, skipped = partition(accounts, chosen_shard)
        coverage = ShardCoverage(chosen_shard.key, len(accounts), skipped)
        if not args.as_json:
            say(coverage.line(), stderr=True)
    source, target = source_server, target_server
    if args.reverse:
        from mailstack.sync.reverse import reversed_accounts

        accounts, source, target = reversed_accounts(accounts), target_server, source_server
    with _progress(enabled=not args.as_json) as progress:
        results = run_sync(accounts, source, target, options, progress)
    uidls = _carry_uidls(accounts, results, source, target, pop_server, pop_users, options, args.jobs)
    if args.as_json:
        print_json({**report_json(results, problems, dry_run=args.dry_run, shard=coverage),
                    "pop3_uidls": [u.to_dict() for u in uidls]})
    else:
        _print_table(results, dry_run=args.dry_run)
        if coverage:
            say(coverage.line())
        for line in note_lines(results):
            say(line)
        for line in error_lines(results):
            say(line, stderr=True)
        for u in uidls:
            seen = u.error or f"{u.carried} of {u.listed} POP3 UIDLs kept" + (
                f" ({u.unmatched} not copied to the new INBOX yet)" if u.unmatched else "")
            say(f"{u.source_user} -> {u.target_user}: {seen}", stderr=bool(u.error))
    if stack_file is not None and not args.dry_run:
        _record(stack_file, results, problems, reverse=args.reverse,
                partial=partial_scope(args.include, args.since, args.max_age), shard=coverage)
    if problems:
        return EXIT_PROBLEMS
    if not all(r.in_sync for r in results) or any(u.error for u in uidls):
        return EXIT_FAILED
    return EXIT_OK


def _print_table(results, *, dry_run: bool) -> None:
    """The per-mailbox table, drawn by rich (loaded only for it)."""
    from rich.console import Console

    from mailstack.sync.report import report_table

    Console(highlight=False, soft_wrap=True).print(report_table(results, dry_run=dry_run))


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
        raise UsageError("a reverse sync copies back only the mail of the cutover days: run it on one machine, "
                         "without --shard", "--shard")
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise UsageError(str(exc), "--shard") from None


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
    say(f"recorded in {shard_path(path, shard.key)}", stderr=True)


class _RichProgress:
    """Overall and per-mailbox bars (messages and bytes), on stderr."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[messages]}"),
                                 DownloadColumn(), TimeElapsedColumn(), console=Console(stderr=True), transient=True)
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
        self.enabled = enabled and sys.stderr.isatty()
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
