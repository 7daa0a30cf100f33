"""The sync engine: copies each mailbox from the source server to the target, incrementally.

Per mailbox, one connection to each side. Per folder: compare with the state
(:mod:`mailstack.sync.state`), recognise copies an interrupted run left
without a state entry, copy the rest in batches (source FETCH and target
MULTIAPPEND overlap, so both servers work at once), then carry flag changes.
Several mailboxes run at once (``jobs``). A dropped connection is retried;
what was copied before it is not copied again.

The source is untrusted: what one answer may make the engine hold is bounded
(:class:`mailstack.imap.Limits`), memory over all mailboxes is charged by the
bytes actually received (:class:`ByteBudget`), a FETCH answer counts only
for the UIDs asked and a UID asked and not answered is missing, and each
mailbox, and the whole run, has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Protocol, Sequence

from mailstack.imap import (
    CommandFailed,
    ConnectError,
    ConnectionLost,
    FolderStatus,
    ImapConnection,
    ImapError,
    Limits,
    Listed,
    Message,
    NoSuchFolder,
    OverQuota,
)
from mailstack.imap.endpoint import Endpoint, login
from mailstack.imap.wire import printable
from mailstack.sync import flagcheck, names, plan
from mailstack.sync.accounts import Account
from mailstack.sync.deadline import Deadline, before
from mailstack.sync.plan import FolderPlan, FolderRules, FolderState
from mailstack.sync.state import SyncState, state_file


@dataclass(frozen=True)
class SyncOptions:
    state_dir: Path
    rules: FolderRules = FolderRules()
    since: date | None = None
    dry_run: bool = False
    jobs: int = 4
    batch_bytes: int = plan.BATCH_BYTES
    memory_bytes: int = 12 * 1024 * 1024  # message bytes held at once, over all mailboxes
    batch_count: int = plan.BATCH_COUNT
    retries: int = 3
    timeout: float = 120.0
    max_message_bytes: int = Limits.max_literal  # a larger message is reported, not copied
    deadline: float | None = None  # seconds for the whole run
    mailbox_deadline: float | None = 6 * 3600.0  # seconds for one mailbox; the next run goes on where it stopped
    verify: bool = False  # compare every copied message's flags on both sides and repair the target's

    @property
    def limits(self) -> Limits:
        return Limits(max_literal=self.max_message_bytes)


@dataclass
class FolderResult:
    """What happened to one folder (or, in a dry run, what would)."""

    name: str
    target: str = ""
    copied: int = 0
    bytes: int = 0
    skipped: int = 0
    flag_updates: int = 0
    flags_repaired: int = 0          # --verify: messages whose flags differed on the target (repaired unless dry run)
    repairs: list[str] = field(default_factory=list)  # what --verify found and did, one line each
    mapped_from: str = ""            # the refused name --map-invalid mapped to ``target``
    unchanged: bool = False          # nothing changed a run acts on since the last complete run: not listed
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"folder": self.name, "target": self.target, "mapped_from": self.mapped_from,
                "unchanged": self.unchanged, "copied": self.copied,
                "bytes": self.bytes, "skipped": self.skipped, "flag_updates": self.flag_updates,
                "flags_repaired": self.flags_repaired, "repairs": list(self.repairs), "errors": list(self.errors)}


@dataclass
class MailboxResult:
    """One mailbox's outcome; ``in_sync`` is what the exit code is made of."""

    source_user: str
    target_user: str
    dry_run: bool = False
    error: str | None = None
    retries: int = 0
    folders: dict[str, FolderResult] = field(default_factory=dict)

    def folder(self, name: str) -> FolderResult:
        return self.folders.setdefault(name, FolderResult(name))

    def total(self, key: str) -> int:
        return sum(getattr(f, key) for f in self.folders.values())

    @property
    def errors(self) -> list[str]:
        return ([self.error] if self.error else []) + [f"{f.name}: {e}" for f in self.folders.values() for e in f.errors]

    @property
    def in_sync(self) -> bool:
        """No error, and (in a dry run) nothing left to copy or update."""
        pending = self.dry_run and (self.total("copied") or self.total("flag_updates") or self.total("flags_repaired"))
        return not self.errors and not pending

    def to_dict(self) -> dict:
        return {"source_user": self.source_user, "target_user": self.target_user, "in_sync": self.in_sync,
                "dry_run": self.dry_run, "copied": self.total("copied"), "bytes": self.total("bytes"),
                "skipped": self.total("skipped"), "flag_updates": self.total("flag_updates"),
                "flags_repaired": self.total("flags_repaired"), "retries": self.retries,
                "folders_unchanged": sum(f.unchanged for f in self.folders.values()), "errors": self.errors,
                "folders": [f.to_dict() for f in self.folders.values()]}


class ByteBudget:
    """Message bytes in flight over all mailboxes, so that memory stays bounded whatever ``jobs`` is.

    A batch larger than the whole budget still passes when nothing else is held.
    A batch is reserved by the sizes the source announced, then charged by
    the bytes it actually sent (:meth:`take`): a source that announces less
    than it sends makes the others wait, not memory grow.
    """

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._changed = asyncio.Condition()

    async def acquire(self, size: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used == 0 or self.used + size <= self.limit)
            self.used += size

    def take(self, size: int) -> None:
        """Bytes already received beyond a reservation: counted at once (nobody waits for what is already held)."""
        self.used += size

    async def release(self, size: int) -> None:
        async with self._changed:
            self.used -= size
            self._changed.notify_all()


class Progress(Protocol):
    """What the engine reports while it runs (the CLI draws it; tests ignore it)."""

    def planned(self, mailbox: str, messages: int, size: int) -> None: ...
    def advanced(self, mailbox: str, messages: int, size: int) -> None: ...
    def finished(self, mailbox: str, result: MailboxResult) -> None: ...


class NoProgress:
    def planned(self, mailbox: str, messages: int, size: int) -> None:
        pass

    def advanced(self, mailbox: str, messages: int, size: int) -> None:
        pass

    def finished(self, mailbox: str, result: MailboxResult) -> None:
        pass


async def sync_all(accounts: Sequence[Account], source: Endpoint, target: Endpoint, options: SyncOptions,
                   progress: Progress | None = None) -> list[MailboxResult]:
    """Sync every account, ``options.jobs`` at a time; results in the accounts' order."""
    progress = progress or NoProgress()
    limit = asyncio.Semaphore(max(1, options.jobs))
    budget = ByteBudget(options.memory_bytes)
    run_deadline = Deadline.after(options.deadline, "the run's deadline")

    async def one(account: Account) -> MailboxResult:
        async with limit:
            result = await sync_mailbox(account, source, target, options, progress, budget, run_deadline)
            progress.finished(account.source_user, result)
            return result

    return list(await asyncio.gather(*(one(a) for a in accounts)))


async def sync_mailbox(account: Account, source: Endpoint, target: Endpoint, options: SyncOptions,
                       progress: Progress, budget: ByteBudget | None = None,
                       run_deadline: Deadline | None = None) -> MailboxResult:
    """Sync one mailbox, retrying after a dropped connection, until its deadline; never raises for server trouble."""
    result = MailboxResult(account.source_user, account.target_user, dry_run=options.dry_run)
    path = state_file(options.state_dir, str(source), account.source_user, str(target), account.target_user)
    # Creating a state file, and checkpointing it at the end, wait on the disk: done on a worker thread, so the
    # other mailboxes of the run go on meanwhile.
    state = await asyncio.to_thread(SyncState, path)
    budget = budget or ByteBudget(options.memory_bytes)
    deadline = Deadline.first(run_deadline, Deadline.after(options.mailbox_deadline, "the deadline of one mailbox"))
    try:
        passed = await before(deadline, _sync_until_done(account, source, target, options, progress, state, result,
                                                         budget))
        if passed:
            result.error = passed
    except (ValueError, LookupError, TypeError) as exc:  # data no check foresaw: this mailbox stops, the run goes on
        result.error = f"stopped by data it could not read ({exc.__class__.__name__}: {printable(str(exc))})"
    finally:
        await asyncio.to_thread(state.close)
    return result


async def _sync_until_done(account: Account, source: Endpoint, target: Endpoint, options: SyncOptions,
                           progress: Progress, state: SyncState, result: MailboxResult, budget: ByteBudget) -> None:
    connected_once = False
    while True:
        run = _MailboxRun(account, source, target, options, progress, state, result, budget)
        done = False
        try:
            await run.connect()
            connected_once = True
            await run.sync()
            done = True
            result.error = None
            return
        except (ConnectionLost, ConnectError) as exc:
            # A server unreachable from the start is reported at once; a dropped session is retried.
            if (isinstance(exc, ConnectError) and not connected_once) or result.retries >= options.retries:
                result.error = str(exc)
                return
            result.retries += 1
            await asyncio.sleep(min(0.2 * 2 ** result.retries, 5.0))
        except OverQuota as exc:
            result.error = f"target over quota: raise the quota of {account.target_user} ({exc})"
            return
        except ImapError as exc:  # including a source that broke a bound: not retried
            result.error = str(exc)
            return
        finally:
            await run.close(polite=done)


class _MailboxRun:
    """One attempt at one mailbox: two sessions, then every folder."""

    def __init__(self, account: Account, source: Endpoint, target: Endpoint, options: SyncOptions,
                 progress: Progress, state: SyncState, result: MailboxResult, budget: ByteBudget):
        self.account, self.source, self.target, self.budget = account, source, target, budget
        self.options, self.progress, self.state, self.result = options, progress, state, result
        self.src: ImapConnection | None = None
        self.tgt: ImapConnection | None = None
        self.since_epoch = (int(datetime(options.since.year, options.since.month, options.since.day,
                                         tzinfo=timezone.utc).timestamp()) if options.since else None)

    async def connect(self) -> None:
        """Both sessions, logged in at once; when one fails, the other is hung up and the first failure raised."""
        sessions = await asyncio.gather(
            login(self.source, self.account.source_user, self.account.source_password, "source",
                  self.options.timeout, self.options.limits),
            login(self.target, self.account.target_user, self.account.target_password, "target",
                  self.options.timeout, self.options.limits), return_exceptions=True)
        failed = [s for s in sessions if isinstance(s, BaseException)]
        if failed:
            for session in sessions:
                if not isinstance(session, BaseException):
                    session.close()
            raise failed[0]
        self.src, self.tgt = sessions

    async def close(self, polite: bool) -> None:
        """Log out of both sessions when all went well; otherwise (a lost session, a server that broke a bound,
        the deadline) just hang up: a server that misbehaves is not waited for."""
        for connection in (self.src, self.tgt):
            if connection is not None:
                await connection.logout() if polite else connection.close()

    async def sync(self) -> None:
        src, tgt = self.src, self.tgt
        (source_ns, source_listed, source_subscribed), (target_ns, target_listed, target_subscribed) = \
            await _both(src.folders(), tgt.folders())  # both servers asked at once
        source_folders = [f for f in source_listed if f.selectable]
        target_folders = {f.name for f in target_listed if f.selectable}
        naming = names.naming_for(target_ns.delimiter)
        plans = plan.plan_folders([f.name for f in source_folders], source_ns, target_ns, self.options.rules, naming,
                                  target_folders)
        for missing in self.options.rules.missing_explicit(p.name for p in plans):
            self.result.folder(missing).errors = ["no such folder on the source"]
        # Every folder's STATUS on each side in one round trip: an unchanged folder costs nothing more.
        wanted = [p for p in plans if p.target is not None]
        source_statuses, target_statuses = await _both(
            src.statuses(list(dict.fromkeys(p.source for p in wanted))),
            tgt.statuses(list(dict.fromkeys(p.target for p in wanted if p.target in target_folders))))
        for folder in plans:
            if folder.target is None:
                if not folder.left_out:
                    self.result.folder(folder.name).errors = [folder.reason]
                continue
            result = self.result.folder(folder.name)
            result.target = plan.normal_name(folder.target, target_ns)
            result.mapped_from = folder.mapped_from
            result.errors = []
            exists = folder.target in target_folders
            try:
                if not exists and not self.options.dry_run:
                    await tgt.create(folder.target)
                    target_folders.add(folder.target)
                    exists = True
                if (exists and folder.source in source_subscribed and folder.target not in target_subscribed
                        and not self.options.dry_run):
                    await tgt.subscribe(folder.target)
                    target_subscribed.add(folder.target)
            except OverQuota:
                raise
            except CommandFailed as exc:
                # One folder the target refuses never stops the others.
                renamed = plan.renamed(folder.name, self.options.rules.renames)
                result.errors.append(f"the new server refused the folder {result.target!r} "
                                     f"({exc.server_text or exc}): {names.remedy(folder.name, renamed, naming)}")
                continue
            try:
                source_status = _answered(source_statuses[folder.source])
                if not exists:
                    target_status = FolderStatus(0, 1, 0)
                elif folder.target in target_statuses:
                    target_status = _answered(target_statuses[folder.target])
                else:  # created by this run
                    target_status = await tgt.status(folder.target)
                await self.sync_folder(folder, result, exists, source_status, target_status)
            except NoSuchFolder as exc:
                result.errors.append(str(exc))
            except OverQuota as exc:
                result.errors.append(f"target over quota ({exc})")
                raise
            except CommandFailed as exc:
                result.errors.append(str(exc))

    async def sync_folder(self, folder: FolderPlan, result: FolderResult, target_exists: bool,
                          source_status: FolderStatus, target_status: FolderStatus) -> None:
        src, tgt, options = self.src, self.tgt, self.options
        dry = options.dry_run
        marks = self.state.load_marks(folder.source)
        state = plan.still_valid(marks, source_status.uidvalidity, target_status.uidvalidity)
        if state is not marks:
            if not dry:
                self.state.reset(folder.source, state)
        elif options.verify:  # --verify looks at every message, even in an unchanged folder
            state = self.state.load(folder.source)
        elif not plan.why_look(state.complete, source_status, target_status, self.since_epoch):
            result.skipped, result.unchanged = source_status.messages, True
            return
        else:
            state = self.state.load(folder.source)
        state.complete = None  # until this run completes the folder

        await src.select(folder.source, readonly=True)
        first = not state.synced and not options.since  # every message is new: listed with its details at once
        listed = await src.list_messages(details=first)
        if options.since:
            wanted = set(await src.search_since(options.since))
            listed = [m for m in listed if m.uid in wanted]
        new = plan.to_copy(listed, state)
        if new and not first:
            asked = [m.uid for m in new]
            new = await src.list_messages(asked, details=True)
            result.errors += plan.unanswered(asked, new, "listed by the source, then not answered (deleted meanwhile?)")
        if new and target_exists and (target_status.uidnext - 1 > state.target_seen or state.unpaired):
            recognised = await self.recognise(folder, state, new, listed)
            new = [m for m in new if m.uid not in recognised]
        changes = plan.flag_changes(listed, state)
        result.errors += plan.remarks(m for m in listed if m.uid in changes)
        # Messages an earlier attempt of this run copied are counted as copied, not skipped.
        result.skipped = max(0, len(listed) - len(new) - result.copied)
        if not options.verify:
            del listed  # only --verify needs the listing again: a large folder's is not held during the copy
        if dry:
            result.copied, result.bytes, result.flag_updates = len(new), sum(m.size for m in new), len(changes)
            if options.verify and target_exists:
                await self.verify_flags(folder, state, listed, result)
            return

        new, too_large = plan.within_size(new, options.max_message_bytes)
        result.errors += too_large + plan.remarks(new)  # what is dropped of their flags and dates, said once
        pending = plan.Pending.of(new)
        del new  # a large folder's listing is not held while it is copied
        self.progress.planned(self.account.source_user, len(pending), pending.bytes)
        await self.copy(folder, state, pending, result)
        if changes:
            await tgt.select(folder.target)
            await tgt.store_flags(plan.group_by_flags(changes, state))
            self.state.record(folder.source, state, [(uid, state.synced[uid][0], flags) for uid, flags in changes.items()])
            result.flag_updates = len(changes)
        if options.verify:
            await self.verify_flags(folder, state, listed, result)
        if not result.errors:
            # The target's STATUS from before this run's writes will do: of its values only UIDVALIDITY is compared
            # later (plan.why_look), and writing does not move it.
            state.complete = plan.FolderMark(source_status, target_status, self.since_epoch)
        self.state.save(folder.source, state)

    async def verify_flags(self, folder: FolderPlan, state: FolderState, listed: list[Listed],
                           result: FolderResult) -> None:
        """--verify: the target's flags compared message by message and repaired (see :mod:`flagcheck`)."""
        repaired, lines, errors = await flagcheck.verify_folder(self.tgt, folder.target, listed, state,
                                                                dry_run=self.options.dry_run)
        result.flags_repaired += repaired
        result.repairs += lines
        result.errors += errors

    async def recognise(self, folder: FolderPlan, state: FolderState, new: list[Listed],
                        listed: list[Listed]) -> set[int]:
        """Source UIDs already on the target without a state entry.

        An interrupted run, a lost state file, or a message that reached the
        target first and the source later (a rollback's reverse sync): target
        messages never examined, and those examined that were no copy, are
        compared with the new source messages.
        """
        tgt, src = self.tgt, self.src
        await tgt.select(folder.target, readonly=self.options.dry_run)
        unknown = await tgt.list_messages(start=state.target_seen + 1, details=True)
        if state.unpaired:
            unknown = await tgt.list_messages(sorted(state.unpaired), details=True) + unknown
        source_uids, target_uids = plan.candidates(new, unknown)
        pairs: dict[int, int] = {}
        if source_uids:
            source_headers = await src.fetch_headers(source_uids)
            target_headers = await tgt.fetch_headers(target_uids)
            by_uid = {m.uid: m for m in new}
            target_by_uid = {m.uid: m for m in unknown}
            pairs = plan.match_copies(
                {u: plan.fingerprint(by_uid[u], h) for u, h in source_headers.items()},
                {u: plan.fingerprint(target_by_uid[u], h) for u, h in target_headers.items()})
        # Recorded with the target's flags: a differing source flag is then carried as a flag change.
        target_flags = {m.uid: m.flags for m in unknown}
        if self.options.dry_run:  # in memory only, so the dry run counts those flag changes too
            state.synced.update((s, (t, target_flags[t])) for s, t in pairs.items())
        else:
            self.state.record(folder.source, state, [(s, t, target_flags[t]) for s, t in pairs.items()])
            state.target_seen = max([state.target_seen] + [m.uid for m in unknown])
            self.state.set_unpaired(folder.source, state, {m.uid for m in unknown} - set(pairs.values()))
        return set(pairs)

    async def copy(self, folder: FolderPlan, state: FolderState, pending: plan.Pending, result: FolderResult) -> None:
        """Fetch batch k+1 from the source while batch k is appended to the target; memory stays a few batches.

        The budget is reserved by the sizes the source announced and charged
        by the bytes it sent (messages announced larger than
        ``max_message_bytes`` are left out before).
        """
        if not pending:
            return
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        held = [0]  # bytes of the budget this folder holds (fetched, queued or being appended)

        async def produce() -> None:
            try:
                for asked, announced, listed in pending.batches(max_bytes=self.options.batch_bytes,
                                                                max_count=self.options.batch_count):
                    await self.budget.acquire(announced)
                    held[0] += announced
                    fetched = await self.src.fetch_messages(asked, expected_bytes=announced, listed=listed)
                    received = sum(len(m.body) for m in fetched)
                    if received > announced:
                        self.budget.take(received - announced)
                        held[0] += received - announced
                    await queue.put((asked, fetched, max(received, announced)))
                await queue.put(None)
            except Exception as exc:  # handed to the consumer, which raises it in its own task
                await queue.put(exc)

        producer = asyncio.create_task(produce())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                asked, fetched, size = item
                del item
                messages, problems = plan.check_answer(asked, fetched)
                result.errors += problems
                del fetched
                await self.append(folder, state, messages, result)
                del messages
                held[0] -= size
                await self.budget.release(size)
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
            if held[0]:
                await self.budget.release(held[0])

    async def append(self, folder: FolderPlan, state: FolderState, messages: list[Message], result: FolderResult) -> None:
        if not messages:
            return
        try:
            uids = await self.tgt.append_many(folder.target, messages)
        except OverQuota:
            raise
        except CommandFailed:
            if len(messages) == 1:
                raise
            # One bad message fails the whole MULTIAPPEND: find it by appending one at a time.
            for message in messages:
                try:
                    await self.append(folder, state, [message], result)
                except CommandFailed as exc:
                    if isinstance(exc, OverQuota):
                        raise
                    result.errors.append(f"message UID {message.uid} refused by the target: {exc.server_text or exc}")
            return
        size = sum(len(m.body) for m in messages)
        if uids is not None:
            # What was received, not what the source announced, is what the state says was copied.
            self.state.record(folder.source, state, [(m.uid, u, m.flags) for m, u in zip(messages, uids)],
                              {m.uid: len(m.body) for m in messages})
        else:
            result.errors.append("the target does not report UIDs of appended messages (no UIDPLUS): run again "
                                 "to recognise them")
        result.copied += len(messages)
        result.bytes += size
        self.progress.advanced(self.account.source_user, len(messages), size)


async def _both(first, second) -> list:
    """Two awaitables at once, their results; when one fails, the other is cancelled and waited for, and the
    failure raised as it is (a lost session is then retried with nothing left running on the other)."""
    tasks = [asyncio.ensure_future(first), asyncio.ensure_future(second)]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _answered(status: FolderStatus | CommandFailed) -> FolderStatus:
    """A folder's STATUS, or the failure it ended with raised (handled as that folder's error)."""
    if isinstance(status, CommandFailed):
        raise status
    return status


def run_sync(accounts: Sequence[Account], source: Endpoint, target: Endpoint, options: SyncOptions,
             progress: Progress | None = None) -> list[MailboxResult]:
    """Blocking entry point for the CLI and tests."""
    return asyncio.run(sync_all(accounts, source, target, options, progress))
