"""A live comparison of the migrated mailboxes: messages per folder on the old server and on the new one.

Folders are paired the way the sync pairs them (:func:`mailstack.sync.plan.plan_folder`),
so ``INBOX.Sent`` on a Courier-style old server is compared with ``Sent`` on
the new one. Counts come from STATUS MESSAGES: nothing is selected, no flag
changes. Whether a pair matches is decided by :func:`judge_folder`, a pure
function; the rest of this module only asks the servers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Sequence

from mailstack.imap import ImapConnection, ImapError, NoSuchFolder
from mailstack.sync import names, plan
from mailstack.sync.accounts import Account
from mailstack.imap.endpoint import Endpoint, login
from mailstack.sync.plan import FolderRules

TIMEOUT = 60.0


@dataclass(frozen=True)
class FolderCounts:
    """One source folder and its counterpart on the target.

    ``target_messages`` is None when the target has no such folder;
    ``not_migrated`` says why the sync would leave the folder out (a name the
    target cannot hold), empty when it is migrated.
    """

    name: str                   # on the source: Unicode, no namespace prefix, "/" between levels
    target: str                 # the same folder on the target, named the same way
    source_messages: int
    target_messages: int | None
    not_migrated: str = ""

    @property
    def label(self) -> str:
        return self.name if self.name == self.target or not self.target else f"{self.name} -> {self.target}"


@dataclass
class MailboxComparison:
    """One mailbox on both servers: its folders' counts, or why it could not be compared."""

    source_user: str
    target_user: str
    folders: list[FolderCounts] = field(default_factory=list)
    error: str | None = None

    @property
    def differences(self) -> list[str]:
        """What does not match, one line per folder (login and connection trouble included)."""
        return ([self.error] if self.error else []) + [d for d in map(judge_folder, self.folders) if d]

    @property
    def matches(self) -> bool:
        return not self.differences

    @property
    def messages(self) -> int:
        """Messages on the old server, over every compared folder."""
        return sum(f.source_messages for f in self.folders)


def judge_folder(folder: FolderCounts) -> str | None:
    """Why the folder does not match, or None when it does.

    The target may hold more than the source: mail delivered to the new
    server after the cutover. Fewer messages, or no folder at all, means the
    sync has not copied everything.
    """
    if folder.not_migrated:
        return f"{folder.name}: not migrated ({folder.not_migrated})"
    if folder.target_messages is None:
        return (f"{folder.label}: {_messages(folder.source_messages)} on the old server, "
                f"no such folder on the new one")
    if folder.target_messages < folder.source_messages:
        return (f"{folder.label}: {_messages(folder.source_messages)} on the old server, "
                f"{folder.target_messages} on the new one ({folder.source_messages - folder.target_messages} missing)")
    return None


def _messages(count: int) -> str:
    return f"{count} message{'' if count == 1 else 's'}"


# ------------------------------------------------------------------ shells (I/O)


async def compare_all(accounts: Sequence[Account], source: Endpoint, target: Endpoint, rules: FolderRules = FolderRules(),
                      jobs: int = 4) -> list[MailboxComparison]:
    """Compare every account, ``jobs`` at a time; results in the accounts' order."""
    limit = asyncio.Semaphore(max(1, jobs))

    async def one(account: Account) -> MailboxComparison:
        async with limit:
            return await compare_mailbox(account, source, target, rules)

    return list(await asyncio.gather(*(one(a) for a in accounts)))


async def compare_mailbox(account: Account, source: Endpoint, target: Endpoint,
                          rules: FolderRules = FolderRules()) -> MailboxComparison:
    """Count one mailbox's messages per folder on both servers; never raises for server trouble."""
    comparison = MailboxComparison(account.source_user, account.target_user)
    src = tgt = None
    try:
        src, tgt = await asyncio.gather(
            login(source, account.source_user, account.source_password, "old server", TIMEOUT),
            login(target, account.target_user, account.target_password, "new server", TIMEOUT),
            return_exceptions=True)
        for session in (src, tgt):
            if isinstance(session, BaseException):
                raise session
        comparison.folders = await _count_folders(src, tgt, rules)
    except ImapError as exc:
        comparison.error = str(exc)  # the client's messages never carry a password
    finally:
        for session in (src, tgt):
            if isinstance(session, ImapConnection):
                await session.logout()
    return comparison


async def _count_folders(src: ImapConnection, tgt: ImapConnection, rules: FolderRules) -> list[FolderCounts]:
    source_ns, target_ns = await src.namespace(), await tgt.namespace()
    target_folders = {f.name for f in await tgt.list_folders() if f.selectable}
    counts = []
    sources = [f.name for f in await src.list_folders() if f.selectable]
    naming = names.naming_for(target_ns.delimiter)
    for planned in plan.plan_folders(sources, source_ns, target_ns, rules, naming, target_folders):
        if planned.left_out:
            continue
        try:
            source_messages = (await src.status(planned.source)).messages
        except NoSuchFolder:
            continue  # deleted on the old server since LIST
        if planned.target is None:
            counts.append(FolderCounts(planned.name, "", source_messages, None, planned.reason))
            continue
        target_messages = None
        if planned.target in target_folders:
            try:
                target_messages = (await tgt.status(planned.target)).messages
            except NoSuchFolder:
                pass
        counts.append(FolderCounts(planned.name, plan.normal_name(planned.target, target_ns), source_messages,
                                   target_messages))
    return counts


def compare_mailboxes(accounts: Sequence[Account], source: Endpoint, target: Endpoint, rules: FolderRules = FolderRules(),
                      jobs: int = 4) -> list[MailboxComparison]:
    """Blocking entry point: every account's folders compared, old server against new."""
    return asyncio.run(compare_all(accounts, source, target, rules, jobs))
