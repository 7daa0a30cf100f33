"""The end-of-run report: one row per mailbox, then every error with its mailbox and folder.

Folder names and errors carry text the servers chose: it is shown only
through :func:`mailstack.imap.wire.printable` (no control character, no
terminal escape sequence reaches the operator's terminal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mailstack.imap.wire import printable
from mailstack.problems import Problem
from mailstack.sync.engine import MailboxResult


def differences(results: Sequence[MailboxResult]) -> int:
    """What a sync found to do: copies, flag updates and repairs, and mailboxes it could not bring in sync."""
    return sum(mailbox_differences(r) for r in results)


def mailbox_differences(result: MailboxResult) -> int:
    """What a sync found to do in one mailbox (1 more when it did not end in sync)."""
    return (result.total("copied") + result.total("flag_updates") + result.total("flags_repaired")
            + (0 if result.in_sync else 1))


def report_json(results: Sequence[MailboxResult], problems: Sequence[Problem], *, dry_run: bool,
                shard: ShardCoverage | None = None) -> dict:
    """The report as data (``--json``); ``shard`` is None for a run of the whole accounts file."""
    return {"dry_run": dry_run, "in_sync": not problems and all(r.in_sync for r in results),
            "shard": shard.to_dict() if shard else None,
            "mailboxes": [shown(r.to_dict()) for r in results],
            "account_problems": [str(p) for p in problems]}


def shown(value):
    """A report value with every string in it made printable."""
    if isinstance(value, str):
        return printable(value, None)
    if isinstance(value, dict):
        return {shown(k): shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shown(v) for v in value]
    return value


def report_table(results: Sequence[MailboxResult], *, dry_run: bool):
    """Per-mailbox counts (a rich Table); a dry run says what would be copied."""
    from rich.table import Table

    verb = "to copy" if dry_run else "copied"
    table = Table("mailbox", "target", verb, "MB", "already there", "flag updates" + (" due" if dry_run else ""),
                  "folders unchanged", "status",
                  title="mailstack sync" + (" (dry run: nothing changed)" if dry_run else ""))
    for r in results:
        status = "in sync" if r.in_sync else ("pending" if not r.errors else f"{len(r.errors)} error(s)")
        if r.retries:
            status += f" ({r.retries} reconnect{'s' if r.retries > 1 else ''})"
        table.add_row(r.source_user, r.target_user, str(r.total("copied")), f"{r.total('bytes') / 1e6:.1f}",
                      str(r.total("skipped")), _flag_updates(r), unchanged_folders(r), status)
    return table


def unchanged_folders(result: MailboxResult) -> str:
    """``4/5``: folders found as the last complete run left them on both sides (so not listed), of those synced."""
    synced = [f for f in result.folders.values() if f.target]
    return f"{sum(f.unchanged for f in synced)}/{len(synced)}"


def _flag_updates(result: MailboxResult) -> str:
    repaired = result.total("flags_repaired")
    return str(result.total("flag_updates")) + (f" (+{repaired} repaired)" if repaired else "")


def error_lines(results: Sequence[MailboxResult]) -> list[str]:
    return [f"{r.source_user} -> {r.target_user}: {printable(e, None)}" for r in results for e in r.errors]


def note_lines(results: Sequence[MailboxResult]) -> list[str]:
    """Folders --map-invalid renamed, and what --verify found and repaired: one line each, with mailbox and folder."""
    lines = []
    for r in results:
        for f in r.folders.values():
            where = f"{r.source_user} -> {r.target_user}: {f.name}"
            if f.mapped_from:
                lines.append(f"{where}: the new server refuses {f.mapped_from!r}; mapped to {f.target!r} (--map-invalid)")
            lines += [f"{where}: {line}" for line in f.repairs]
    return lines


def sync_coverage(results, problems: int, at, *, reverse: bool = False, partial: str | None = None,
                  shard=None) -> dict:
    """The evidence parts of a sync run: each mailbox it covered, under its roster address, with ``at``.

    ``results`` are the engine's mailbox results (forward: the target is the
    roster mailbox; ``reverse``: the source is); ``problems`` counts account
    rows that could not run. A forward run of one shard (``shard``: a
    :class:`ShardCoverage`) is recorded under its K/N key, in its own file.
    """
    from mailstack.migration.evidence import FinalSync, MailboxSync, ShardSync

    covered = {(r.source_user if reverse else r.target_user).lower():
               MailboxSync(at=at, differences=mailbox_differences(r), in_sync=r.in_sync, partial=partial)
               for r in results}
    if reverse:
        return {"reverse_synced": covered}
    if shard is not None:
        return {"sync_shards": {shard.key: ShardSync(
            shard=shard.key, at=at, accounts=shard.accounts, skipped=shard.skipped,
            differences=differences(results) + problems, synced=covered)}}
    return {"synced": covered, "final_sync": FinalSync(at=at, differences=differences(results) + problems)}


@dataclass(frozen=True)
class ShardCoverage:
    """Which shard a run covered: K/N, the accounts in it, and those left to the other shards."""

    key: str
    accounts: int
    skipped: int

    def to_dict(self) -> dict:
        index, count = self.key.split("/")
        return {"shard": self.key, "index": int(index), "count": int(count), "accounts": self.accounts,
                "skipped_other_shards": self.skipped}

    def line(self) -> str:
        """The report's line: which shard, what it covered and what it left to the others."""
        return (f"shard {self.key}: {self.accounts} account(s) in this shard, {self.skipped} left to the other "
                "shards")
