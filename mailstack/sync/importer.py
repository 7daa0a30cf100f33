"""``mailstack import mbox|pst``: mail from files into a folder of a mailbox over IMAP.

mbox files are read with Python's :mod:`mailbox`. PST files are converted
first by ``readpst`` (Debian's pst-utils) into one file per message, in a
private temporary directory, keeping the PST's folders. Every input file is
read and checked before the first message is sent: a bad file changes
nothing on the server.

Each message is appended with its flags (mbox Status/X-Status/X-Keywords
headers, which are then removed, as an mbox server hides them) and its date
(the From_ line, else the Date header). A message already in the target
folder, same size and same header section, is not appended again: an
import can be repeated, or resumed after a failure, without duplicates.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import mailbox
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from mailstack.sync.backup import STATUS_LETTERS, X_STATUS_LETTERS, header_of
from mailstack.imap import CommandFailed, ImapConnection, ImapError, Message, Namespace, OverQuota
from mailstack.imap.wire import flag, format_internaldate
from mailstack.problems import InputError, Problem
from mailstack.sync import plan
from mailstack.imap.endpoint import Endpoint, login

KINDS = ("mbox", "pst")
READPST_INSTALL = "apt-get install pst-utils"
# mbox bookkeeping headers: the flags they carry are set through IMAP, the headers themselves are dropped.
METADATA_HEADERS = frozenset({"status", "x-status", "x-keywords", "x-uid", "x-imapbase"})
HEADER_CHUNK = 500
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_FROM_DATE = re.compile(r"(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) +(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?"
                        r"(?: +(?:[A-Z]{1,5}|(?P<tz1>[+-]\d{4})))? +(?P<year>\d{4})(?: +(?P<tz2>[+-]\d{4}))?")
_PST_MESSAGE = re.compile(r"^(\d+)(\.eml)?$")


@dataclass
class ImportResult:
    """One input folder: where it went, messages appended and found already there, and what failed."""

    source: str
    folder: str
    copied: int = 0
    present: int = 0
    error: str | None = None
    refused: list[str] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class Prepared:
    """A message as it will be appended: CRLF bytes without mbox bookkeeping headers, flags, IMAP date."""

    body: bytes
    flags: frozenset[str]
    internaldate: str


@dataclass
class Source:
    """The messages of one input folder, read one at a time, and the target folder they go to."""

    origin: str
    folder: str
    count: int
    read: Callable[[int], Prepared | None]


# ---------------------------------------------------------------- messages (pure)


def header_fields(header: bytes) -> list[tuple[str, bytes]]:
    """Header lines grouped by field (continuation lines joined): [(lower-case name, raw bytes)]."""
    fields: list[tuple[str, bytes]] = []
    for line in re.findall(rb"[^\n]*\n|[^\n]+$", header):
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
        else:
            fields.append((line.split(b":", 1)[0].strip().lower().decode("latin-1"), line))
    return fields


def field_value(raw: bytes) -> str:
    return " ".join(raw.split(b":", 1)[-1].decode("utf-8", "replace").split())


def flags_from(fields: Sequence[tuple[str, bytes]]) -> frozenset[str]:
    """IMAP flags of Status (R), X-Status (A F T D) and X-Keywords headers."""
    flags: set[str] = set()
    for name, raw in fields:
        value = field_value(raw)
        if name == "status":
            flags |= {flag for flag, letter in STATUS_LETTERS.items() if letter in value}
        elif name == "x-status":
            flags |= {flag for flag, letter in X_STATUS_LETTERS.items() if letter in value}
        elif name == "x-keywords":
            flags |= {k for k in re.split(r"[\s,]+", value) if k and not k.startswith("\\") and flag(k) == k}
    return frozenset(flags)


def from_line_date(line: str) -> datetime | None:
    """The date of an mbox From_ line (``From sender Tue Nov 14 22:13:20 2023``); UTC when it names no zone."""
    match = _FROM_DATE.search(line)
    if not match or match["mon"] not in _MONTHS:
        return None
    offset = match["tz1"] or match["tz2"] or "+0000"
    try:
        return datetime.strptime(f"{match['year']} {match['mon']} {match['day']} {match['h']}:{match['m']}:"
                                 f"{match['s'] or '00'} {offset}", "%Y %b %d %H:%M:%S %z")
    except ValueError:
        return None


def header_date(fields: Sequence[tuple[str, bytes]]) -> datetime | None:
    """The Date header as a datetime (UTC when it names no zone), or None."""
    for name, raw in fields:
        if name == "date":
            try:
                parsed = email.utils.parsedate_to_datetime(field_value(raw))
            except (TypeError, ValueError, IndexError):
                return None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def prepare(raw: bytes, now: datetime | None = None) -> Prepared | None:
    """A message of an mbox (with its From_ line) or of readpst, made ready to append; None for an mbox's
    folder-internal pseudo message (UW-IMAP and Dovecot keep one with an X-IMAP header)."""
    from_date = None
    if raw.startswith(b"From "):
        line, _, raw = raw.partition(b"\n")
        from_date = from_line_date(line.decode("latin-1"))
    text = raw.replace(b"\r\n", b"\n")
    end = text.find(b"\n\n")
    header, rest = (text[:end + 1], text[end + 1:]) if end >= 0 else (text, b"")
    fields = header_fields(header)
    if any(name == "x-imap" for name, _ in fields):
        return None
    kept = b"".join(raw_field for name, raw_field in fields if name not in METADATA_HEADERS)
    body = (kept + rest).replace(b"\n", b"\r\n")
    moment = from_date or header_date(fields) or now or datetime.now(timezone.utc)
    return Prepared(body, flags_from(fields), format_internaldate(moment))


def message_key(body: bytes) -> tuple[int, str]:
    """Size and header digest: what says a message is already in the folder (dates may differ)."""
    return len(body), hashlib.sha256(header_of(body)).hexdigest()


def pst_folders(tree: Path) -> list[tuple[tuple[str, ...], list[Path]]]:
    """Folders of a ``readpst -M`` output tree that hold messages: (path parts, message files in order).

    readpst puts everything in one directory named after the PST's message
    store; that level is left out. Folders without mail (Calendar, Contacts)
    are too.
    """
    entries = list(tree.iterdir())
    base = entries[0] if len(entries) == 1 and entries[0].is_dir() else tree
    found = []
    for directory, subdirs, files in os.walk(base):
        subdirs.sort()
        messages = sorted((f for f in files if _PST_MESSAGE.match(f)), key=lambda f: int(_PST_MESSAGE.match(f)[1]))
        if messages:
            found.append((Path(directory).relative_to(base).parts, [Path(directory) / f for f in messages]))
    return sorted(found, key=lambda item: item[0])


# ---------------------------------------------------------------- reading the input (before anything is sent)


def open_sources(files: Sequence[Path], kind: str, folder: str, scratch: Path) -> tuple[list[Source], list]:
    """Every input folder to import, and objects to close afterwards; InputError naming each bad file."""
    if kind not in KINDS:
        raise ValueError(f"import kind {kind!r}: use mbox or pst")
    problems = [Problem(str(p), "no such file") for p in files if not p.is_file()]
    if problems:
        raise InputError(f"{kind} import", problems)
    return _mbox_sources(files, folder) if kind == "mbox" else (_pst_sources(files, folder, scratch), [])


def _mbox_sources(files: Sequence[Path], folder: str) -> tuple[list[Source], list]:
    problems = []
    for path in files:
        try:
            with open(path, "rb") as handle:
                start = handle.read(5)
        except OSError as exc:
            problems.append(Problem(str(path), f"cannot read it: {exc.strerror or exc}"))
            continue
        if start and start != b"From ":
            problems.append(Problem(str(path), "not an mbox file: an mbox starts with a 'From ' line"))
    if problems:
        raise InputError("mbox import", problems)
    sources, opened = [], []
    for path in files:
        box = mailbox.mbox(str(path), create=False)
        opened.append(box)
        keys = box.keys()
        sources.append(Source(str(path), folder, len(keys),
                              lambda i, box=box, keys=keys: prepare(box.get_bytes(keys[i], from_=True))))
    return sources, opened


def _pst_sources(files: Sequence[Path], folder: str, scratch: Path) -> list[Source]:
    readpst = shutil.which("readpst")
    if readpst is None:
        raise InputError("pst import", [Problem(str(p), f"readpst is not installed: {READPST_INSTALL}") for p in files])
    problems, trees = [], []
    for number, path in enumerate(files):
        out = scratch / f"pst{number}"
        out.mkdir(mode=0o700)
        # -M: one RFC 822 file per message; -b: no RTF copy of the body; -D: deleted items too;
        # -8: UTF-8 bodies; -t e: mail only (no contacts, calendar, journal).
        done = subprocess.run([readpst, "-q", "-M", "-b", "-D", "-8", "-t", "e", "-o", str(out), str(path.resolve())],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()[-1]
            problems.append(Problem(str(path), f"readpst cannot read it ({said}): is it an Outlook .pst file?"))
        else:
            trees.append((path, out))
    if problems:
        raise InputError("pst import", problems)
    sources = []
    for path, out in trees:
        for parts, messages in pst_folders(out):
            sources.append(Source(f"{path}:{'/'.join(parts) or '/'}", "/".join((folder, *parts)), len(messages),
                                  lambda i, messages=messages: prepare(messages[i].read_bytes())))
    return sources


# ---------------------------------------------------------------- the run


def run_import(files: Sequence[Path], kind: str, server: Endpoint, user: str, password: str, folder: str, *,
               batch_bytes: int = plan.BATCH_BYTES, batch_count: int = plan.BATCH_COUNT,
               timeout: float = 120.0) -> list[ImportResult]:
    """Import mbox or PST files into ``folder`` of ``user``'s mailbox; one result per input folder.

    Raises :class:`InputError` for a bad input file before anything is sent.
    Server trouble (login refused, a folder that cannot be created) is in the
    results.
    """
    with tempfile.TemporaryDirectory(prefix="mailstack-import-") as scratch:
        sources, opened = open_sources(files, kind, folder.strip("/") or "INBOX", Path(scratch))
        try:
            return asyncio.run(_import_all(sources, server, user, password, batch_bytes, batch_count, timeout))
        finally:
            for box in opened:
                box.close()


async def _import_all(sources: list[Source], server: Endpoint, user: str, password: str, batch_bytes: int,
                      batch_count: int, timeout: float) -> list[ImportResult]:
    results = [ImportResult(s.origin, s.folder) for s in sources]
    if not sources:
        return results
    try:
        connection = await login(server, user, password, "target", timeout)
    except ImapError as exc:
        for result in results:
            result.error = str(exc)
        return results
    try:
        namespace = await connection.namespace()
        existing = {f.name for f in await connection.list_folders() if f.selectable}
        for source, result in zip(sources, results):
            try:
                await _import_folder(connection, namespace, existing, source, result, batch_bytes, batch_count)
            except CommandFailed as exc:
                result.error = str(exc)
    except ImapError as exc:  # the session is gone: what was not done is reported as such
        for result in results:
            if result.error is None and not result.refused:
                result.error = str(exc)
    finally:
        await connection.logout()
    for result in results:
        if result.refused and result.error is None:
            result.error = f"{len(result.refused)} messages refused by the server, first: {result.refused[0]}"
    return results


async def _import_folder(connection: ImapConnection, namespace: Namespace, existing: set[str], source: Source,
                         result: ImportResult, batch_bytes: int, batch_count: int) -> None:
    parts = source.folder.split("/")
    if namespace.delimiter != "/" and any(namespace.delimiter in p for p in parts):
        result.error = (f"the folder name {source.folder!r} contains the server's hierarchy separator "
                        f"{namespace.delimiter!r}: import into another --folder")
        return
    wire = plan.wire_name(source.folder, namespace)
    if wire not in existing:  # parents are the server's business, as with any client's CREATE
        await connection.create(wire)
        await connection.subscribe(wire)
        existing.add(wire)

    keys = {}
    for i in range(source.count):  # first pass: only sizes and digests are kept
        prepared = source.read(i)
        if prepared is not None:
            keys[i] = message_key(prepared.body)
    await connection.select(wire)
    listed = await connection.list_messages(details=True)
    sizes = {size for size, _ in keys.values()}
    size_of = {m.uid: m.size for m in listed if m.size in sizes}
    on_server = {}
    candidates = sorted(size_of)
    for start in range(0, len(candidates), HEADER_CHUNK):
        headers = await connection.fetch_headers(candidates[start:start + HEADER_CHUNK])
        on_server.update({uid: (size_of[uid], hashlib.sha256(h).hexdigest()) for uid, h in headers.items()})
    present = plan.match_copies(keys, on_server)
    result.present = len(present)

    batch: list[Message] = []
    size = 0
    for i in sorted(set(keys) - set(present)):  # second pass: read again, append in batches
        prepared = source.read(i)
        batch.append(Message(0, prepared.flags, prepared.internaldate, prepared.body))
        size += len(prepared.body)
        if size >= batch_bytes or len(batch) >= batch_count:
            await _append(connection, wire, batch, result)
            batch, size = [], 0
    await _append(connection, wire, batch, result)


async def _append(connection: ImapConnection, wire: str, batch: list[Message], result: ImportResult) -> None:
    """Append a batch; when the server refuses it, one at a time, so one bad message does not stop the rest."""
    if not batch:
        return
    try:
        await connection.append_many(wire, batch)
        result.copied += len(batch)
    except OverQuota:
        raise
    except CommandFailed as exc:
        if len(batch) == 1:
            result.refused.append(exc.server_text or str(exc))
            return
        for message in batch:
            await _append(connection, wire, [message], result)
