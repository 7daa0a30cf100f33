"""The end-of-run report: one row per mailbox, then every error with its mailbox and folder."""

from __future__ import annotations

from typing import Sequence

from rich.table import Table

from mailstack.problems import Problem
from mailstack.sync.engine import MailboxResult


def differences(results: Sequence[MailboxResult]) -> int:
    """What a sync found to do: copies, flag updates, and mailboxes it could not bring in sync."""
    return sum(r.total("copied") + r.total("flag_updates") + (0 if r.in_sync else 1) for r in results)


def report_json(results: Sequence[MailboxResult], problems: Sequence[Problem], *, dry_run: bool) -> dict:
    """The report as data (``--json``)."""
    return {"dry_run": dry_run, "in_sync": not problems and all(r.in_sync for r in results),
            "mailboxes": [r.to_dict() for r in results],
            "account_problems": [str(p) for p in problems]}


def report_table(results: Sequence[MailboxResult], *, dry_run: bool) -> Table:
    """Per-mailbox counts; a dry run says what would be copied."""
    verb = "to copy" if dry_run else "copied"
    table = Table("mailbox", "target", verb, "MB", "already there", "flag updates" + (" due" if dry_run else ""),
                  "status", title="mailstack sync" + (" (dry run: nothing changed)" if dry_run else ""))
    for r in results:
        status = "in sync" if r.in_sync else ("pending" if not r.errors else f"{len(r.errors)} error(s)")
        if r.retries:
            status += f" ({r.retries} reconnect{'s' if r.retries > 1 else ''})"
        table.add_row(r.source_user, r.target_user, str(r.total("copied")), f"{r.total('bytes') / 1e6:.1f}",
                      str(r.total("skipped")), str(r.total("flag_updates")), status)
    return table


def error_lines(results: Sequence[MailboxResult]) -> list[str]:
    return [f"{r.source_user} -> {r.target_user}: {e}" for r in results for e in r.errors]
