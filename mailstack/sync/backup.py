"""``mailstack backup``: every source mailbox saved to local files over IMAP, incrementally.

One directory per mailbox under the backup root, in one of two formats:

- ``maildir``: a Maildir++ as Dovecot and Courier read it. INBOX is the
  directory itself, other folders ``.Archive.2024`` (modified UTF-7, so
  non-ASCII names survive); each message is the exact bytes the server sent,
  its flags are the info letters (keywords in Dovecot's ``dovecot-keywords``)
  and its INTERNALDATE is the file's mtime.
- ``mbox``: one file per folder, ``Archive.sbd/2024.mbox``; INTERNALDATE in
  the From_ line, flags in Status/X-Status/X-Keywords headers (as Dovecot,
  mutt and :mod:`mailbox` read them), LF line ends and ``>From`` quoting.

Each mailbox directory has an index, ``.mailstack-backup.jsonl``: one line
per saved message (folder, UIDVALIDITY, UID, fingerprint). A run fetches
only UIDs not in it. When a folder's UIDVALIDITY changed (a rebuilt server),
messages are recognised by fingerprint (size, date, header digest) instead,
so nothing is saved twice. The index is locked while a run writes, and holds
no credential. Directories are created 0700 and files 0600: mail is private.

What the server sends is untrusted: only valid flags reach ``dovecot-keywords``
and the mbox headers; a folder whose name cannot be a file name inside the
mailbox's directory (``/``, an empty name, one too long) is saved under a
mapped name, listed in the result's notes; a message without a readable
INTERNALDATE is saved with the date of its Date header (or 1970-01-01), and
said.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import fcntl
import hashlib
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from mailstack.files import fsync_dir, private_dir, write_private
from mailstack.imap import CommandFailed, ImapConnection, ImapError, Limits, Message, Namespace, utf7, wire
from mailstack.sync import plan
from mailstack.sync.accounts import Account
from mailstack.imap.endpoint import Endpoint, login
from mailstack.sync.deadline import Deadline, before
from mailstack.sync.plan import FolderRules

FORMATS = ("maildir", "mbox")
INDEX_NAME = ".mailstack-backup.jsonl"
# Local names: Unicode, "/" between levels, no prefix; a server's separator never clashes with it.
LOCAL_NAMESPACE = Namespace("", "/")
MAILDIR_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}
# mbox status letters, as Dovecot's mbox driver and mutt write them: Status R, X-Status A F T D.
STATUS_LETTERS = {"\\Seen": "R"}
X_STATUS_LETTERS = {"\\Answered": "A", "\\Flagged": "F", "\\Draft": "T", "\\Deleted": "D"}
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"
MAPPED_PREFIX = "mailstack-mapped-"
_NAME_MAX = 255  # bytes in one file name (ext4, xfs)


class BackupBusy(Exception):
    """Another run is writing to the same mailbox directory."""


@dataclass
class BackupResult:
    """One mailbox's outcome: folders saved, messages written now and found already saved."""

    user: str
    path: Path
    folders: int = 0
    written: int = 0
    present: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # what was saved differently (a mapped folder name), not errors


# ---------------------------------------------------------------- decisions and formats (pure)


def mailbox_dir(root: Path, user: str) -> Path:
    """The directory of one mailbox: its user name, with ``/`` and a leading ``.`` escaped."""
    name = user.replace("%", "%25").replace("/", "%2F")
    if name.startswith(".") or not name:
        name = "%2E" + name[1:]
    return root / name


def maildir_folder(name: str) -> str:
    """Maildir++ directory of a folder: "" for INBOX, ``.Archive.2024`` for ``Archive/2024``.

    Name parts are modified UTF-7, as Dovecot stores them; a ``.`` inside a
    part (the Maildir++ separator) is written as its UTF-7 form ``&AC4-``.
    """
    if name.upper() == "INBOX":
        return ""
    return "." + ".".join(utf7.encode(part).replace(".", "&AC4-") for part in name.split("/"))


def mbox_file(name: str) -> Path:
    """mbox file of a folder: ``Archive/2024`` -> ``Archive.sbd/2024.mbox``.

    Files end in ``.mbox`` and parent directories in ``.sbd``, so a folder and
    a subfolder's parent never claim the same path, whatever the names.
    """
    parts = name.split("/")
    return Path(*[part + ".sbd" for part in parts[:-1]], parts[-1] + ".mbox")


def folder_path(fmt: str, name: str) -> tuple[Path, str]:
    """Where a folder is saved, relative to its mailbox's directory; and why its name was mapped ("" if not).

    A name that would not give one file name inside the directory (``/``
    gives ``..``, an empty name the mailbox's own directory, a NUL, a name
    over 255 bytes) is saved as ``mailstack-mapped-<digest>``: the same
    folder always maps to the same place, so a later run adds to it.
    """
    path = Path(maildir_folder(name)) if fmt == "maildir" else mbox_file(name)
    why = _unsafe(path, name)
    if not why:
        return path, ""
    mapped = MAPPED_PREFIX + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return (Path("." + mapped) if fmt == "maildir" else Path(mapped + ".mbox")), why


def _unsafe(path: Path, name: str) -> str:
    """Why ``path`` (made from the folder ``name``) cannot be used inside a mailbox's directory, or ""."""
    if path == Path("") or path == Path("."):
        return "" if name.upper() == "INBOX" else "the name would be the mailbox's own directory"
    parts = path.parts
    if path.is_absolute() or any(part in ("", ".", "..") for part in parts):
        return "the name would leave the mailbox's directory"
    if any("\0" in part for part in parts):
        return "the name holds a NUL character"
    if any(len(part.encode("utf-8", "surrogateescape")) > _NAME_MAX for part in parts):
        return f"a part of the name is longer than a file name may be ({_NAME_MAX} bytes)"
    return ""


def message_epoch(message: Message) -> tuple[int, str]:
    """The message's date as seconds since the epoch, and what it is when not its INTERNALDATE ("" when it is).

    Without a readable INTERNALDATE: the date of its Date header, else 0
    (1970-01-01). Never the time of the run: the same message always gets
    the same date, so a later run recognises what an earlier one saved.
    """
    moment = wire.parse_internaldate(message.internaldate) if message.internaldate else None
    if moment is not None:
        return int(moment.timestamp()), ""
    try:
        header = email.message_from_bytes(header_of(message.body), policy=email.policy.compat32)
        moment = email.utils.parsedate_to_datetime(str(header["Date"])) if header["Date"] else None
        if moment is not None:
            return int(moment.timestamp()), "saved with the date of its Date header (no readable INTERNALDATE)"
    except (TypeError, ValueError, IndexError, OverflowError):
        pass
    return 0, "saved with the date 1970-01-01 (no readable INTERNALDATE, no readable Date header)"


def header_of(body: bytes) -> bytes:
    """The header section with its closing blank line (the whole message when it has no body)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = body.find(separator)
        if end >= 0:
            return body[:end + len(separator)]
    return body


def fingerprint(body: bytes, epoch: int) -> str:
    """Size, date and a digest of the header section: recognises a message without its UID or a Message-ID."""
    return f"{len(body)}:{epoch}:{hashlib.sha256(header_of(body)).hexdigest()[:32]}"


def keywords_of(flags: Iterable[str]) -> list[str]:
    """The flags that are keywords (``$Forwarded``, ``Project-X``), not system flags (``\\Seen``).

    Only valid IMAP keywords (atoms: no space, no line break): what reaches
    ``dovecot-keywords`` and ``X-Keywords`` is one word each.
    """
    return sorted(f for f in flags if not f.startswith("\\") and wire.flag(f) == f)


def assign_letters(letters: dict[str, str], keywords: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Keyword -> Maildir letter (a-z, the order of ``dovecot-keywords``) with new keywords added; and those left out.

    Maildir has 26 keyword letters per folder: keywords beyond them are not saved.
    """
    letters = dict(letters)
    dropped = []
    for keyword in keywords:
        if keyword in letters:
            continue
        free = [c for c in KEYWORD_LETTERS if c not in letters.values()]
        if free:
            letters[keyword] = free[0]
        else:
            dropped.append(keyword)
    return letters, dropped


def maildir_info(flags: Iterable[str], letters: dict[str, str]) -> str:
    """Maildir info ``2,FRSab``: system flags as capitals, keywords as their letters, in ASCII order."""
    chosen = [MAILDIR_LETTERS[f] for f in flags if f in MAILDIR_LETTERS] + [letters[f] for f in flags if f in letters]
    return "2," + "".join(sorted(chosen))


def maildir_name(epoch: int, uidvalidity: int, uid: int) -> str:
    """A file name unique per source message: a run cut short after writing a file does not write it twice."""
    return f"{epoch}.V{uidvalidity}U{uid}.mailstack"


def status_headers(flags: Iterable[str]) -> bytes:
    """Status, X-Status and X-Keywords header lines for flags (mbox convention; ``O``: not new)."""
    flags = set(flags)
    lines = [b"Status: " + "".join(sorted(v for k, v in STATUS_LETTERS.items() if k in flags)).encode() + b"O\n"]
    x_status = "".join(v for k, v in X_STATUS_LETTERS.items() if k in flags)
    if x_status:
        lines.append(b"X-Status: " + x_status.encode() + b"\n")
    keywords = keywords_of(flags)
    if keywords:
        lines.append(b"X-Keywords: " + " ".join(keywords).encode("utf-8", "replace") + b"\n")
    return b"".join(lines)


def mbox_entry(body: bytes, flags: Iterable[str], epoch: int) -> bytes:
    """One message as an mbox entry: From_ line with its date, status headers, LF line ends, quoted ``From``."""
    text = body.replace(b"\r\n", b"\n")
    end = text.find(b"\n\n")
    if end >= 0:
        text = text[:end + 1] + status_headers(flags) + text[end + 1:]
    else:
        text = text + (b"" if text.endswith(b"\n") or not text else b"\n") + status_headers(flags)
    text = re.sub(rb"(?m)^From ", b">From ", text)
    if not text.endswith(b"\n"):
        text += b"\n"
    return b"From MAILER-DAEMON " + time.asctime(time.gmtime(epoch)).encode() + b"\n" + text + b"\n"


# ---------------------------------------------------------------- files


class BackupIndex:
    """The messages saved in one mailbox directory: an append-only JSON-lines file, locked while in use."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise BackupBusy(f"another backup is writing to {path.parent}") from None
        # (folder, UIDVALIDITY) -> UIDs saved, and the fingerprints saved under it
        self._uids: dict[tuple[str, int], set[int]] = {}
        self._prints: dict[tuple[str, int], Counter] = {}
        with open(path, "rb") as existing:
            data = existing.read()
        for line in data.splitlines():
            try:
                entry = json.loads(line)
                self._add(entry["folder"], int(entry["uidvalidity"]), int(entry["uid"]), str(entry["print"]))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash: that message is fetched again
        if data and not data.endswith(b"\n"):
            os.write(self._fd, b"\n")

    def _add(self, folder: str, uidvalidity: int, uid: int, print_: str) -> None:
        self._uids.setdefault((folder, uidvalidity), set()).add(uid)
        self._prints.setdefault((folder, uidvalidity), Counter())[print_] += 1

    def saved(self, folder: str, uidvalidity: int) -> set[int]:
        """UIDs of the folder already saved under this UIDVALIDITY."""
        return self._uids.get((folder, uidvalidity), set())

    def saved_before(self, folder: str, uidvalidity: int) -> Counter:
        """Fingerprints saved under an earlier UIDVALIDITY and not yet matched under this one."""
        earlier: Counter = Counter()
        for (name, validity), prints in self._prints.items():
            if name == folder and validity != uidvalidity:
                earlier.update(prints)
        return earlier - self._prints.get((folder, uidvalidity), Counter())

    def record(self, folder: str, uidvalidity: int, saved: Sequence[tuple[int, str]]) -> None:
        """Remember saved messages (UID, fingerprint); on disk before returning."""
        if not saved:
            return
        lines = [json.dumps({"folder": folder, "uidvalidity": uidvalidity, "uid": uid, "print": p}, ensure_ascii=False)
                 for uid, p in saved]
        os.write(self._fd, ("\n".join(lines) + "\n").encode())
        os.fsync(self._fd)
        for uid, p in saved:
            self._add(folder, uidvalidity, uid, p)

    def close(self) -> None:
        os.close(self._fd)


class MaildirFolder:
    """One folder of a Maildir++ backup: files written to tmp/, then renamed into cur/ with their flags."""

    def __init__(self, root: Path, where: Path):
        self.path = root / where
        for sub in ("", "cur", "new", "tmp"):
            private_dir(self.path / sub)
        if self.path != root and not (self.path / "maildirfolder").exists():
            write_private(self.path / "maildirfolder", b"", sync=False)
        self.names = {entry.split(":")[0] for sub in ("cur", "new") for entry in os.listdir(self.path / sub)}
        self.letters = self._read_keywords()
        self.dropped: set[str] = set()

    def _read_keywords(self) -> dict[str, str]:
        letters = {}
        try:
            lines = (self.path / "dovecot-keywords").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return {}
        for line in lines:
            number, _, keyword = line.partition(" ")
            if number.isdigit() and int(number) < len(KEYWORD_LETTERS) and wire.flag(keyword) == keyword:
                letters[keyword] = KEYWORD_LETTERS[int(number)]
        return letters

    def has(self, message: Message, uidvalidity: int, epoch: int) -> bool:
        return maildir_name(epoch, uidvalidity, message.uid) in self.names

    def write(self, message: Message, uidvalidity: int, epoch: int) -> None:
        name = maildir_name(epoch, uidvalidity, message.uid)
        letters, dropped = assign_letters(self.letters, keywords_of(message.flags))
        self.dropped.update(dropped)
        if letters != self.letters:
            self._write_keywords(letters)
        temporary = self.path / "tmp" / name
        write_private(temporary, message.body)
        os.utime(temporary, (epoch, epoch))
        os.rename(temporary, self.path / "cur" / f"{name}:{maildir_info(message.flags, letters)}")
        self.names.add(name)

    def _write_keywords(self, letters: dict[str, str]) -> None:
        text = "".join(f"{KEYWORD_LETTERS.index(c)} {k}\n" for k, c in sorted(letters.items(), key=lambda kv: kv[1]))
        temporary = self.path / "tmp" / "dovecot-keywords.mailstack"
        write_private(temporary, text.encode("utf-8"))
        os.rename(temporary, self.path / "dovecot-keywords")
        self.letters = letters

    def sync(self) -> None:
        fsync_dir(self.path / "cur")

    def close(self) -> None:
        pass


class MboxFolder:
    """One folder of an mbox backup: entries appended to its file.

    Appended by hand rather than through :class:`mailbox.mbox`, which reads
    the whole existing file first: an incremental run stays cheap.
    """

    def __init__(self, root: Path, where: Path):
        self.path = root / where
        private_dir(self.path.parent)
        self._file = os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        self.dropped: set[str] = set()

    def has(self, message: Message, uidvalidity: int, epoch: int) -> bool:
        return False

    def write(self, message: Message, uidvalidity: int, epoch: int) -> None:
        self._file.write(mbox_entry(message.body, message.flags, epoch))

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class BackupOptions:
    fmt: str = "maildir"
    rules: FolderRules = FolderRules()
    jobs: int = 4
    batch_bytes: int = plan.BATCH_BYTES
    batch_count: int = plan.BATCH_COUNT
    timeout: float = 120.0
    max_message_bytes: int = Limits.max_literal  # a larger message is reported, not saved
    deadline: float | None = None  # seconds for the whole run
    mailbox_deadline: float | None = 6 * 3600.0  # seconds for one mailbox; the next run goes on where it stopped


def run_backup(accounts: Sequence[Account], server: Endpoint, to: Path, fmt: str = "maildir",
               rules: FolderRules = FolderRules(), jobs: int = 4, **options) -> list[BackupResult]:
    """Save each account's source mailbox under ``to`` (``jobs`` at a time); one result per source user.

    ``options`` are further :class:`BackupOptions` (``deadline``, ``max_message_bytes``, ...).
    """
    if fmt not in FORMATS:
        raise ValueError(f"backup format {fmt!r}: use maildir or mbox")
    return asyncio.run(backup_all(accounts, server, to, BackupOptions(fmt, rules, jobs, **options)))


async def backup_all(accounts: Sequence[Account], server: Endpoint, to: Path,
                     options: BackupOptions) -> list[BackupResult]:
    """Every distinct source mailbox once (two rows for one source user would write the same files)."""
    unique: dict[str, Account] = {}
    for account in accounts:
        unique.setdefault(account.source_user, account)
    limit = asyncio.Semaphore(max(1, options.jobs))
    run_deadline = Deadline.after(options.deadline, "the run's deadline")

    async def one(account: Account) -> BackupResult:
        async with limit:
            deadline = Deadline.first(run_deadline, Deadline.after(options.mailbox_deadline,
                                                                   "the deadline of one mailbox"))
            result = BackupResult(account.source_user, mailbox_dir(to, account.source_user))
            passed = await before(deadline, backup_mailbox(account, server, options, result))
            if passed:
                result.error = passed
            return result

    return list(await asyncio.gather(*(one(a) for a in unique.values())))


async def backup_mailbox(account: Account, server: Endpoint, options: BackupOptions, result: BackupResult) -> None:
    """Save one mailbox into ``result.path``; never raises for server or file trouble: the result says what went wrong."""
    path = result.path
    problems: list[str] = []
    index: BackupIndex | None = None
    connection: ImapConnection | None = None
    done = False
    try:
        connection = await login(server, account.source_user, account.source_password, "source", options.timeout,
                                 Limits(max_literal=options.max_message_bytes))
        private_dir(path)
        index = BackupIndex(path / INDEX_NAME)
        namespace = await connection.namespace()
        plans = [plan.plan_folder(f.name, namespace, LOCAL_NAMESPACE, options.rules)
                 for f in await connection.list_folders() if f.selectable]
        missing = options.rules.missing_explicit(p.name for p in plans)
        problems += [f"{name}: no such folder on the source" for name in missing]
        for folder in plans:
            if folder.target is None:
                if not folder.left_out:
                    problems.append(f"{folder.name}: {folder.reason}")
                continue
            name = plan.renamed(folder.name, options.rules.renames)
            where, mapped = folder_path(options.fmt, name)
            if mapped:
                result.notes.append(f"folder {name!r} saved as {where} ({mapped})")
            try:
                said = await backup_folder(connection, folder.source, name, path, where, index, result, options)
                result.folders += 1
                problems += [f"{name}: {problem}" for problem in said]
            except CommandFailed as exc:
                problems.append(f"{name}: {exc}")
            except (OSError, ValueError) as exc:
                problems.append(f"{name}: cannot write the backup: {exc}")
        done = True
    except (ImapError, BackupBusy) as exc:
        result.error = str(exc)
    except OSError as exc:
        result.error = f"cannot write the backup: {exc}"
    finally:
        if connection is not None:  # a session that failed (a server past a bound, the deadline) is not waited for
            await connection.logout() if done else connection.close()
        if index is not None:
            index.close()
    if result.error is None and problems:
        result.error = "; ".join(problems)


async def backup_folder(connection: ImapConnection, source: str, name: str, root: Path, where: Path,
                        index: BackupIndex, result: BackupResult, options: BackupOptions) -> list[str]:
    """Save the folder's messages not in the index, in batches, into ``root / where``; what to report."""
    status = await connection.select(source, readonly=True)
    listed = await connection.list_messages(details=True)
    saved = index.saved(name, status.uidvalidity)
    new = sorted((m for m in listed if m.uid not in saved), key=lambda m: m.uid)
    result.present += len(listed) - len(new)
    new, problems = plan.within_size(new, options.max_message_bytes)
    earlier = index.saved_before(name, status.uidvalidity) if new else Counter()
    folder = MaildirFolder(root, where) if options.fmt == "maildir" else MboxFolder(root, where)
    try:
        for batch in plan.batches(new, max_bytes=options.batch_bytes, max_count=options.batch_count):
            done: list[tuple[int, str]] = []
            asked = [m.uid for m in batch]
            fetched = await connection.fetch_messages(asked, expected_bytes=sum(m.size for m in batch))
            messages, said = plan.check_answer(asked, fetched)
            problems += said
            dated: list[tuple[int, str]] = []
            for message in messages:
                epoch, how = message_epoch(message)
                if how:
                    dated.append((message.uid, f": {how}"))
                print_ = fingerprint(message.body, epoch)
                if earlier[print_] > 0:  # saved before the UIDVALIDITY changed
                    earlier[print_] -= 1
                    result.present += 1
                elif folder.has(message, status.uidvalidity, epoch):  # written by a run cut short before its index entry
                    result.present += 1
                else:
                    folder.write(message, status.uidvalidity, epoch)
                    result.written += 1
                done.append((message.uid, print_))
            folder.sync()
            index.record(name, status.uidvalidity, done)
            problems += plan.grouped_problems(dated)
    finally:
        folder.close()
    if folder.dropped:
        problems.append(f"keywords not saved (Maildir holds 26 per folder): {', '.join(sorted(folder.dropped))}")
    return problems
