"""The check that the migrated mailboxes match the old server, folder by folder (a live comparison)."""

from __future__ import annotations

from typing import Sequence

from mailstack.checks import Check, Result, Target, error, ok
from mailstack.sync.accounts import Account
from mailstack.sync.compare import MailboxComparison, compare_mailboxes
from mailstack.imap.endpoint import Endpoint
from mailstack.imap.wire import printable
from mailstack.sync.plan import FolderRules

CHECK = "mailboxes match old server"
SHOWN = 5  # differences listed in the table; the rest are counted

SYNC_REMEDY = ("run mailstack sync with the same accounts file and folder options (it copies only what is missing), "
               "then verify again")
LOGIN_REMEDY = ("check the users and passwords in the accounts file (source_* for the old server, target_* for the "
                "new one) and that both servers answer IMAP")


def judge_mailboxes(comparisons: Sequence[MailboxComparison]) -> Result:
    """One result for all mailboxes: OK with the totals, or ERROR with the first differences and what to do."""
    differing = [c for c in comparisons if c.differences]
    if not differing:
        folders = sum(len(c.folders) for c in comparisons)
        messages = sum(c.messages for c in comparisons)
        return ok(CHECK, f"{len(comparisons)} mailboxes, {folders} folders, {messages} messages match",
                  mailboxes=len(comparisons), folders=folders, messages=messages,
                  addresses=sorted({c.target_user.lower() for c in comparisons}))
    total = sum(len(c.differences) for c in differing)
    lines, shown = [], 0
    for comparison in differing:
        listed = comparison.differences[:SHOWN - shown]
        if listed:
            shown += len(listed)
            lines.append(f"{comparison.source_user} -> {comparison.target_user}: "
                         + "; ".join(printable(d, None) for d in listed))
    if total > shown:
        lines.append(f"and {total - shown} more")
    unreached = sum(1 for c in differing if c.error)
    remedies = ([LOGIN_REMEDY] if unreached else []) + ([SYNC_REMEDY] if total > unreached else [])
    return error(CHECK, f"{len(differing)} of {len(comparisons)} mailboxes differ:\n" + "\n".join(lines),
                 "; ".join(remedies))


def mailbox_check(accounts: Sequence[Account], source: Endpoint, target: Endpoint,
                  rules: FolderRules = FolderRules(), jobs: int = 4) -> Check:
    """A verify check comparing ``accounts`` between ``source`` (the old server) and ``target`` (the new host)."""

    def mailboxes_match_old_server(_: Target) -> list[Result]:
        return [judge_mailboxes(compare_mailboxes(accounts, source, target, rules, jobs))]

    return mailboxes_match_old_server
