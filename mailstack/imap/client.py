"""An asyncio IMAP4rev1 client for copying mail: pipelined, LITERAL+, MULTIAPPEND, UIDPLUS.

Callers see folders, messages and flags; the protocol stays here. Errors are
:class:`ImapError` subclasses whose messages never carry a password, and
carry server text only made printable.

Every server is untrusted (an old server may be hostile, or just broken):
flags and dates it sends are checked before they are handed on (what was
dropped is said per message), FETCH answers count only for the UIDs asked,
and what one command's answer may make the client hold is bounded
(:class:`Limits`).
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Mapping, Sequence

from mailstack.imap import wire
from mailstack.imap.wire import Literal, Tagged, Token, Untagged

READ_LIMIT = 16 * 1024 * 1024  # one response line
_WRITE_AT = 256 * 1024  # what a command's writes gather before they are written (a literal this large goes alone)
_CHUNK = 1024 * 1024  # literals are read in pieces, so that a slow but moving transfer is not a stall
# Flags a client cannot set: the server owns them.
SERVER_FLAGS = frozenset({"\\Recent"})
_FETCH = frozenset({"FETCH"})


@dataclass(frozen=True)
class Limits:
    """What one command's answer may make the client hold: past a bound it is refused, never held."""

    max_literal: int = 64 * 1024 * 1024        # one literal (a message): a larger one is read past, not kept
    max_answer_bytes: int = 256 * 1024 * 1024  # everything read for one command, kept or not
    max_responses: int = 2_000_000             # untagged responses to one command (a listing has one per message)
    max_chatter: int = 10_000                  # untagged OK/NO/BAD and stray lines: servers send a few


class ImapError(Exception):
    """An IMAP operation failed; the message says what and where, never a password."""


class ConnectError(ImapError):
    """The server cannot be reached, or TLS failed."""


class ConnectionLost(ImapError):
    """The connection dropped or stopped answering mid-session (worth a retry)."""


class ServerMisbehaved(ImapError):
    """The server broke a bound of :class:`Limits`: the session is given up, and not retried."""


class AuthFailed(ImapError):
    """The server refused the user name or password."""


class CommandFailed(ImapError):
    """The server answered NO or BAD (or the command could not be written)."""

    def __init__(self, message: str, code: str | None = None, server_text: str = ""):
        super().__init__(message)
        self.code = code
        self.server_text = server_text


class OverQuota(CommandFailed):
    """The target refused to store a message: the mailbox is over quota."""


class NoSuchFolder(CommandFailed):
    """The folder does not exist."""


@dataclass(frozen=True)
class Folder:
    """A folder as LIST shows it: wire name (modified UTF-7), hierarchy delimiter, attributes."""

    name: str
    delimiter: str | None
    attributes: frozenset[str]

    @property
    def selectable(self) -> bool:
        return not ({"\\noselect", "\\nonexistent"} & {a.lower() for a in self.attributes})


@dataclass(frozen=True)
class Namespace:
    """The personal namespace: folder name prefix (``INBOX.`` on Courier-style servers) and delimiter."""

    prefix: str
    delimiter: str


@dataclass(frozen=True, slots=True)
class FolderStatus:
    uidvalidity: int
    uidnext: int
    messages: int
    highestmodseq: int | None = None


@dataclass(frozen=True, slots=True)
class Listed:
    """A message as listed: UID and flags, with size and internal date when asked for.

    ``problems`` says what of the server's answer was dropped (a flag that is
    not an IMAP flag, a date that is not a date); ``internaldate`` is then "".
    """

    uid: int
    flags: frozenset[str]
    size: int = 0
    internaldate: str = ""
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Message:
    """A whole message: its exact bytes, flags and internal date ("" when the server sent none that is a date).

    ``problems`` as for :class:`Listed`; ``not_kept`` says why the body was
    not kept (too large to hold), and then there is nothing to copy.
    """

    uid: int
    flags: frozenset[str]
    internaldate: str
    body: bytes
    problems: tuple[str, ...] = ()
    not_kept: str = ""


@dataclass
class _Answer:
    """One command's answer as it arrives: what it cost so far."""

    what: str
    folder: str | None
    bytes: int = 0
    responses: int = 0
    chatter: int = 0
    keep_literal: Callable[[int], str] | None = None  # "" to keep a literal of that size, or why not


def tls_context(cafile: str | None = None) -> ssl.SSLContext:
    """The system's CAs, and ``cafile``'s besides: one context for every connection of a run (loading the system's
    CAs anew cost each connection milliseconds of CPU: two per mailbox, thousands of mailboxes). A cafile written
    again (another file, or the same changed) gets a context of its own."""
    if not cafile:
        return _tls_context(None, None)
    found = os.stat(cafile)
    return _tls_context(cafile, (found.st_ino, found.st_mtime_ns, found.st_size))


@lru_cache(maxsize=8)
def _tls_context(cafile: str | None, version: tuple[int, int, int] | None) -> ssl.SSLContext:  # version: a key only
    context = ssl.create_default_context()
    if cafile:
        context.load_verify_locations(cafile)
    return context


class ImapConnection:
    """One logged-in (or about to be) IMAP session."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str, timeout: float,
                 limits: Limits | None = None):
        self._reader = reader
        self._writer = writer
        self.where = where
        self.timeout = timeout
        self.limits = limits or Limits()
        self.capabilities: set[str] = set()
        self._tag = 0
        self.selected: str | None = None
        self._held = bytearray()  # commands written together with the next write (pipelined: one send for many)
        self._unanswered: set[str] = set()  # tags sent whose completion has not been read
        self._early: dict[str, Tagged] = {}  # completions read ahead of their turn (a server may answer out of order)

    # ------------------------------------------------------------ session

    @classmethod
    async def open(cls, host: str, port: int, *, tls: bool, cafile: str | None = None,
                   timeout: float = 60.0, where: str | None = None, address: str | None = None,
                   limits: Limits | None = None) -> "ImapConnection":
        """Connect and read the greeting; ``tls`` for imaps (certificate and host name checked).

        ``address`` connects there instead of resolving ``host``; the certificate is still checked
        against ``host`` (a host not yet in DNS, or reached on a private address).
        """
        where = where or f"{host}:{port}"
        context = tls_context(cafile) if tls else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(address or host, port, ssl=context, limit=READ_LIMIT,
                                                               server_hostname=host if tls else None)
        except ssl.SSLCertVerificationError as exc:
            raise ConnectError(f"{where}: certificate not trusted ({exc.verify_message}): give --cafile with the "
                               f"CA that signed it, or connect by the name the certificate is for") from None
        except ssl.SSLError as exc:
            raise ConnectError(f"{where}: TLS failed: {exc.reason or exc}") from None
        except (OSError, TimeoutError) as exc:
            reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise ConnectError(f"cannot connect to {where}: {reason}") from None
        connection = cls(reader, writer, where, timeout, limits)
        try:
            greeting = await connection._read_parts(connection._answer("greeting"))
        except ImapError:
            connection.close()
            raise
        if greeting[0].startswith(b"* BYE"):
            connection.close()
            raise ConnectError(f"{where} refused the session: {_said(greeting[0][6:])}")
        match = re.search(rb"\[CAPABILITY ([^\]]*)\]", greeting[0])
        if match:
            connection.capabilities = set(match.group(1).decode("ascii", "replace").upper().split())
        return connection

    async def login(self, user: str, password: str) -> None:
        """LOGIN; raises :class:`AuthFailed` without echoing the password."""
        if not self.capabilities:
            await self.capability()
        if "LOGINDISABLED" in self.capabilities:
            raise AuthFailed(f"{self.where} does not allow a password login on this connection: use imaps://")
        try:
            untagged, tagged = await self.command(b"LOGIN", wire.quote(user), wire.quote(password), what="LOGIN",
                                                  kinds=frozenset({"CAPABILITY"}))
        except ValueError:
            raise AuthFailed(f"{self.where}: the user name or password of {wire.printable(user)!r} cannot be "
                             f"sent over IMAP (it contains a NUL character)") from None
        except CommandFailed as exc:
            raise AuthFailed(f"{self.where}: login as {wire.printable(user)!r} refused ({exc.server_text}): "
                             f"check the user name and password") from None
        # The capabilities change with the login: those the server sent with it (in its OK, or untagged), else asked.
        code = tagged.code or ""
        given = [r.text() for r in untagged] + ([code[11:]] if code[:11].upper() == "CAPABILITY " else [])
        if given:
            self.capabilities = set(given[-1].upper().split())
        else:
            await self.capability()

    async def capability(self) -> set[str]:
        untagged, _ = await self.command(b"CAPABILITY", kinds=frozenset({"CAPABILITY"}))
        for response in untagged:
            self.capabilities = set(response.text().upper().split())
        return self.capabilities

    async def logout(self) -> None:
        try:
            async with asyncio.timeout(5):
                await self.command(b"LOGOUT")
        except (ImapError, TimeoutError):
            pass
        self.close()

    def close(self) -> None:
        try:
            self._writer.close()
        except Exception:  # closing a broken transport may raise anything; it is being discarded
            pass

    # ------------------------------------------------------------ folders

    async def namespace(self) -> Namespace:
        """The personal namespace (prefix and delimiter)."""
        if "NAMESPACE" in self.capabilities:
            untagged, _ = await self.command(b"NAMESPACE", kinds=frozenset({"NAMESPACE"}))
            return _personal(untagged) or await self._namespace_by_list()
        return await self._namespace_by_list()

    async def _namespace_by_list(self) -> Namespace:
        """No prefix, and the delimiter LIST "" "" gives (a server without NAMESPACE, or without a personal one)."""
        untagged, _ = await self.command(b"LIST", b'""', b'""', kinds=frozenset({"LIST"}))
        for response in untagged:
            tokens = response.tokens()
            if len(tokens) > 1:
                return Namespace("", _delimiter(tokens[1]) or "/")
        return Namespace("", "/")

    async def list_folders(self) -> list[Folder]:
        return await self._list(b"LIST")

    async def subscribed(self) -> set[str]:
        """Names of subscribed folders (wire form; see :func:`_subscribed`)."""
        return _subscribed(await self._list(b"LSUB"))

    async def folders(self) -> tuple[Namespace, list[Folder], set[str]]:
        """:meth:`namespace`, :meth:`list_folders` and :meth:`subscribed` at once: with NAMESPACE offered, the three
        commands are pipelined (one round trip, one send). Their answers are told apart by kind, whichever
        command's completion they arrive before."""
        if "NAMESPACE" not in self.capabilities:
            return await self.namespace(), await self.list_folders(), await self.subscribed()
        found: dict[str, list[Untagged]] = {"NAMESPACE": [], "LIST": [], "LSUB": []}
        asked = [(b"NAMESPACE",), (b"LIST", b'""', b'"*"'), (b"LSUB", b'""', b'"*"')]
        tags = [await self._send(*command, what=command[0].decode(), hold=True) for command in asked]
        await self._flush()
        failed: list[CommandFailed] = []
        for tag, command in zip(tags, asked):
            try:  # every answer is read, a failed one too: the session stays in step
                await self._complete(tag, what=command[0].decode(), kinds=frozenset(found),
                                     each=lambda response: found[response.kind].append(response))
            except CommandFailed as exc:
                failed.append(exc)
        if failed:
            raise failed[0]
        namespace = _personal(found["NAMESPACE"]) or await self._namespace_by_list()
        return namespace, _folders_of(found["LIST"]), _subscribed(_folders_of(found["LSUB"]))

    async def _list(self, verb: bytes) -> list[Folder]:
        untagged, _ = await self.command(verb, b'""', b'"*"', kinds=frozenset({verb.decode()}))
        return _folders_of(untagged)

    async def create(self, name: str) -> None:
        try:
            await self.command(b"CREATE", _name(self.where, name), folder=name)
        except CommandFailed as exc:
            if (exc.code or "").upper() != "ALREADYEXISTS":
                raise

    async def subscribe(self, name: str) -> None:
        await self.command(b"SUBSCRIBE", _name(self.where, name), folder=name)

    async def status(self, name: str) -> FolderStatus:
        """UIDVALIDITY, UIDNEXT, MESSAGES (and HIGHESTMODSEQ with CONDSTORE) without selecting."""
        untagged, _ = await self.command(b"STATUS", _name(self.where, name), self._status_items(), folder=name,
                                         kinds=frozenset({"STATUS"}))
        return self._status_of(name, untagged)

    async def statuses(self, names: Sequence[str]) -> dict[str, FolderStatus | CommandFailed]:
        """STATUS of many folders in one round trip (the commands pipelined), without selecting any.

        Per folder its :class:`FolderStatus`, or the :class:`CommandFailed`
        (a :class:`NoSuchFolder`...) its STATUS ended with: one folder's
        failure never stops the others. Answers are matched by the folder
        they name, so a server that answers out of order is read right. A lost
        connection raises. A name that must go as a synchronising literal (no
        LITERAL+) is asked after the others, alone.
        """
        items = self._status_items()
        wanted = {_status_key(name): name for name in names}
        got: dict[str, FolderStatus] = {}

        def take(response: Untagged) -> bool:
            tokens = response.tokens()
            name = wanted.get(_status_key(wire.as_text(tokens[0]))) if tokens and isinstance(tokens[0], (str, bytes)) else None
            if name is None or name in got:
                return False
            got[name] = _status_values(tokens)
            return True

        found: dict[str, FolderStatus | CommandFailed] = {}
        sent: list[tuple[str, str]] = []
        waiting: list[tuple[str, Literal]] = []
        for name in names:
            try:
                argument = _name(self.where, name)
            except CommandFailed as exc:
                found[name] = exc
                continue
            if isinstance(argument, Literal) and "LITERAL+" not in self.capabilities:
                # A synchronising literal waits for the server's "+", which comes after the answers to the
                # commands before it: asked alone, once those are read.
                waiting.append((name, argument))
                continue
            sent.append((name, await self._send(b"STATUS", argument, items, what="STATUS", folder=name, hold=True)))
        await self._flush()
        for name, tag in sent:
            try:
                await self._complete(tag, what="STATUS", folder=name, kinds=frozenset({"STATUS"}), each=take)
            except CommandFailed as exc:
                found[name] = exc
        for name, argument in waiting:
            try:
                await self.command(b"STATUS", argument, items, what="STATUS", folder=name,
                                   kinds=frozenset({"STATUS"}), each=take)
            except CommandFailed as exc:
                found[name] = exc
        for name in names:
            if name not in found:
                found[name] = got.get(name) or CommandFailed(f"{self.where}: no STATUS for folder {name!r}")
        return {name: found[name] for name in names}

    def _status_items(self) -> bytes:
        return b"(UIDVALIDITY UIDNEXT MESSAGES" + (b" HIGHESTMODSEQ)" if "CONDSTORE" in self.capabilities else b")")

    def _status_of(self, name: str, untagged: list[Untagged]) -> FolderStatus:
        for response in untagged:
            return _status_values(response.tokens())
        raise CommandFailed(f"{self.where}: no STATUS for folder {name!r}")

    async def select(self, name: str, *, readonly: bool = False) -> FolderStatus:
        """SELECT (or EXAMINE when ``readonly``: flags and \\Recent untouched)."""
        untagged, _ = await self.command(b"EXAMINE" if readonly else b"SELECT", _name(self.where, name), folder=name,
                                         kinds=frozenset({"EXISTS", "OK"}))
        self.selected = name
        values = {"UIDVALIDITY": 0, "UIDNEXT": 0, "EXISTS": 0, "HIGHESTMODSEQ": None}
        for response in untagged:
            if response.kind == "EXISTS":
                values["EXISTS"] = response.number or 0
            elif response.kind == "OK":
                code = (response.code() or "").split()
                if len(code) == 2 and code[0].upper() in values and code[1].isdigit():
                    values[code[0].upper()] = int(code[1])
        return FolderStatus(values["UIDVALIDITY"], values["UIDNEXT"], values["EXISTS"], values["HIGHESTMODSEQ"])

    # ------------------------------------------------------------ messages (selected folder)

    async def list_messages(self, uids: Sequence[int] | None = None, *, start: int = 1,
                            details: bool = False) -> list[Listed]:
        """UID and flags of messages in the selected folder, in UID order: ``uids``, or every UID from ``start``.

        Size and internal date with ``details``. Answers for UIDs not asked
        for are ignored; invalid flags and dates are dropped and said in
        :attr:`Listed.problems`.
        """
        if uids is not None and not uids:
            return []
        items = b"(UID FLAGS RFC822.SIZE INTERNALDATE)" if details else b"(UID FLAGS)"
        wanted = wire.uid_set(uids) if uids is not None else f"{int(start)}:*"
        listing = _Listing(frozenset(uids).__contains__ if uids is not None else (lambda uid: uid >= start), details)
        await self.command(b"UID FETCH", wanted.encode("ascii"), items, what="UID FETCH", folder=self.selected,
                           kinds=_FETCH, each=listing)
        return listing.result()

    async def search_since(self, day) -> list[int]:
        """UIDs of messages whose internal date is on or after ``day``."""
        uids: list[int] = []
        await self.command(b"UID SEARCH SINCE", wire.imap_date(day).encode("ascii"), what="UID SEARCH",
                           folder=self.selected, kinds=frozenset({"SEARCH"}),
                           each=lambda response: uids.extend(n for n in map(_number, response.text().split()) if n))
        return uids

    async def fetch_messages(self, uids: Sequence[int], *, expected_bytes: int = 0,
                             listed: Mapping[int, tuple[frozenset[str], str]] | None = None) -> list[Message]:
        """Whole messages (bytes as stored, flags, internal date), in UID order; \\Seen is not set (BODY.PEEK).

        Only the UIDs asked for: a UID the server does not answer is not in
        the list (the caller sees it missing). ``expected_bytes`` is what the
        server announced for them (RFC822.SIZE): the answer is held up to the
        larger of it and one largest message; bodies past that are read and
        dropped, each with ``not_kept`` saying why. With ``listed`` ({uid:
        (flags, internal date)} as a listing found them) only the bodies are
        asked for, and the messages carry those.
        """
        if not uids:
            return []
        ceiling = max(expected_bytes, self.limits.max_literal)
        held = 0

        def keep(size: int) -> str:
            nonlocal held
            if held + size > ceiling:
                return (f"the server sent more than it announced (RFC822.SIZE: {expected_bytes} bytes for "
                        f"{len(uids)} messages), past what one answer may hold ({ceiling} bytes)")
            held += size
            return ""

        fetched = _Fetched(frozenset(uids).__contains__)
        items = b"(UID BODY.PEEK[])" if listed is not None else b"(UID FLAGS INTERNALDATE BODY.PEEK[])"
        await self.command(b"UID FETCH", wire.uid_set(uids).encode("ascii"), items,
                           what="UID FETCH", folder=self.selected, kinds=_FETCH, each=fetched, keep_literal=keep)
        messages = []
        for uid, found in sorted(fetched.items.items()):
            body = found.get("BODY[]")
            if not isinstance(body, (bytes, str)):
                continue  # no body sent (NIL, or flags only): missing
            if listed is not None:
                (flags, date), problems = listed[uid], ()
            else:
                flags, problems = _flags(found.get("FLAGS"))
                date, problem = _date(found.get("INTERNALDATE"))
                problems = tuple(problems + problem)
            not_kept = body.reason if isinstance(body, wire.Unread) else ""
            messages.append(Message(uid, flags, date, b"" if not_kept else wire.as_bytes(body), problems, not_kept))
        return messages

    async def fetch_headers(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The header section of each message, to recognise a message without a state entry."""
        if not uids:
            return {}
        fetched = _Fetched(frozenset(uids).__contains__)
        await self.command(b"UID FETCH", wire.uid_set(uids).encode("ascii"), b"(UID BODY.PEEK[HEADER])",
                           what="UID FETCH", folder=self.selected, kinds=_FETCH, each=fetched)
        return {uid: wire.as_bytes(found.get("BODY[HEADER]")) for uid, found in fetched.items.items()
                if not isinstance(found.get("BODY[HEADER]"), wire.Unread)}

    async def append_many(self, folder: str, messages: Sequence[Message]) -> list[int] | None:
        """Append messages (MULTIAPPEND when offered: one transaction); their new UIDs, or None without UIDPLUS.

        All or nothing: on failure nothing of the batch is stored.
        """
        if "MULTIAPPEND" in self.capabilities:
            args: list[bytes | Literal] = [b"APPEND", _name(self.where, folder)]
            for message in messages:
                args += self._append_args(folder, message)
            _, tagged = await self.command(*args, folder=folder)
            return _appended_uids(tagged, len(messages))
        uids: list[int] = []
        for message in messages:
            _, tagged = await self.command(b"APPEND", _name(self.where, folder), *self._append_args(folder, message),
                                           folder=folder)
            got = _appended_uids(tagged, 1)
            if got is None:
                return None
            uids += got
        return uids

    def _append_args(self, folder: str, message: Message) -> list[bytes | Literal]:
        """Flags, date (when there is one) and body of one message to APPEND, each through its writer."""
        try:
            args: list[bytes | Literal] = [_flag_list(message.flags)]
            if message.internaldate:
                args.append(wire.date_time(message.internaldate))
        except ValueError as exc:
            raise CommandFailed(f"{self.where}: APPEND {folder!r}: message not sent: {exc}", None, str(exc)) from None
        return args + [Literal(message.body)]

    async def store_flags(self, changes: dict[frozenset[str], list[int]]) -> None:
        """Set the exact flags of messages, pipelined: {flags: [uid, ...]}."""
        try:
            lists = [(wire.flag_list(flags - SERVER_FLAGS), uids) for flags, uids in changes.items()]
        except ValueError as exc:
            raise CommandFailed(f"{self.where}: UID STORE {self.selected!r}: flags not sent: {exc}", None,
                                str(exc)) from None
        tags = []
        for flag_list, uids in lists:
            tags.append(await self._send(b"UID STORE", wire.uid_set(uids).encode("ascii"), b"FLAGS.SILENT", flag_list,
                                         hold=True))
        await self._flush()
        for tag in tags:
            await self._complete(tag, what="UID STORE", folder=self.selected)

    # ------------------------------------------------------------ plumbing

    async def command(self, *args: bytes | Literal, what: str | None = None, folder: str | None = None,
                      kinds: frozenset[str] = frozenset(), each: Callable[[Untagged], bool | None] | None = None,
                      keep_literal: Callable[[int], str] | None = None) -> tuple[list[Untagged], Tagged]:
        """Send one command and read to its completion: (untagged responses, tagged response).

        Only untagged responses of ``kinds`` are kept (handed to ``each`` as
        they arrive, which returns False for one that adds nothing; or
        returned); the others are counted against :class:`Limits` and dropped.
        """
        what = what or (args[0].decode() if isinstance(args[0], bytes) else "command")
        tag = await self._send(*args, what=what, folder=folder)
        return await self._complete(tag, what=what, folder=folder, kinds=kinds, each=each, keep_literal=keep_literal)

    async def _send(self, *args: bytes | Literal, what: str = "command", folder: str | None = None,
                    hold: bool = False) -> str:
        """Write a command; literals are non-synchronising with LITERAL+, else wait for ``+``.

        ``hold``: the command is kept, and goes out with the next write (:meth:`_flush`), so that commands
        pipelined together leave in one send, and the server is woken once for them.
        """
        self._tag += 1
        tag = f"M{self._tag}"
        self._unanswered.add(tag)
        plus = "LITERAL+" in self.capabilities
        chunk = bytearray(tag.encode())
        try:
            for arg in args:
                chunk += b" "
                if isinstance(arg, Literal):
                    if plus:
                        chunk += b"{%d+}\r\n" % len(arg.data)
                        if len(arg.data) < _WRITE_AT:  # small messages go out together: one write for many
                            chunk += arg.data
                            if len(chunk) < _WRITE_AT:
                                continue
                            self._write(chunk)  # not changed after: the next pieces go to a new one
                        else:
                            self._write(bytes(chunk))
                            self._write(arg.data)
                    else:
                        chunk += b"{%d}\r\n" % len(arg.data)
                        self._write(bytes(chunk))
                        await self._await_continuation(self._answer(what, folder))
                        self._write(arg.data)
                    chunk = bytearray()
                else:
                    chunk += arg
            chunk += b"\r\n"
            if hold:
                self._held += chunk
                return tag
            self._write(bytes(chunk))
            await self._writer.drain()
        except (OSError, ConnectionError) as exc:
            raise ConnectionLost(f"{self.where}: connection lost ({exc.__class__.__name__})") from None
        return tag

    def _write(self, data: bytes | bytearray) -> None:
        """Every write of a command: what :meth:`_send` held goes first."""
        if self._held:
            self._writer.write(bytes(self._held))
            self._held.clear()
        self._writer.write(data)

    async def _flush(self) -> None:
        """Send the commands held (see :meth:`_send`)."""
        try:
            self._write(b"")
            await self._writer.drain()
        except (OSError, ConnectionError) as exc:
            raise ConnectionLost(f"{self.where}: connection lost ({exc.__class__.__name__})") from None

    def _answer(self, what: str, folder: str | None = None,
                keep_literal: Callable[[int], str] | None = None) -> _Answer:
        return _Answer(what, folder, keep_literal=keep_literal)

    async def _await_continuation(self, answer: _Answer) -> None:
        await self._writer.drain()
        while True:
            parts = await self._read_parts(answer)
            response = wire.classify(parts)
            if response is None:
                return
            if isinstance(response, Tagged):
                raise CommandFailed(f"{self.where}: literal refused: {_said(response.text)}", response.code,
                                    _said(response.text))
            self._counted(answer, response)

    async def _complete(self, tag: str, *, what: str, folder: str | None = None, kinds: frozenset[str] = frozenset(),
                        each: Callable[[Untagged], bool | None] | None = None,
                        keep_literal: Callable[[int], str] | None = None) -> tuple[list[Untagged], Tagged]:
        answer = self._answer(what, folder, keep_literal)
        untagged: list[Untagged] = []
        completion = self._early.pop(tag, None)
        while completion is None:
            parts = await self._read_parts(answer)
            response = wire.classify(parts)
            if isinstance(response, Tagged):
                completed = wire.tag_of(parts)
                if completed == tag:
                    completion = response
                    break
                if completed in self._unanswered:  # a command pipelined after this one, answered first
                    self._unanswered.discard(completed)
                    self._early[completed] = response
                    continue
            if isinstance(response, Untagged) and response.kind == "BYE" and what != "LOGOUT":
                raise ConnectionLost(f"{self.where}: server closed the session: {_said(response.text())}")
            useful = isinstance(response, Untagged) and response.kind in kinds
            if useful and each is not None:
                useful = each(response) is not False
            elif useful:
                untagged.append(response)
            self._counted(answer, response, useful)
        self._unanswered.discard(tag)
        if not completion.ok:
            raise _failure(self.where, what, folder, completion)
        return untagged, completion

    def _counted(self, answer: _Answer, response: Untagged | Tagged | None, useful: bool = False) -> None:
        """Count a response that does not complete the command.

        Chatter (untagged OK/NO/BAD, stray lines, FETCH answers for UIDs not
        asked) has a bound of its own, far below the one for responses.
        """
        answer.responses += 1
        if answer.responses > self.limits.max_responses:
            raise self._misbehaved(answer, f"more than {self.limits.max_responses} responses to one command")
        if not useful:
            answer.chatter += 1
            if answer.chatter > self.limits.max_chatter:
                raise self._misbehaved(answer, f"more than {self.limits.max_chatter} responses that are no answer "
                                               f"(untagged OK/NO/BAD, stray lines, UIDs not asked for) to one command")

    def _misbehaved(self, answer: _Answer, what: str) -> ServerMisbehaved:
        place = f"{self.where}: {answer.what}" + (f" {answer.folder!r}" if answer.folder else "")
        return ServerMisbehaved(f"{place}: the server sent {what}: stopped reading from it")

    def _took(self, answer: _Answer, size: int) -> None:
        """``size`` more bytes read for this answer."""
        answer.bytes += size
        if answer.bytes > self.limits.max_answer_bytes:
            raise self._misbehaved(answer, f"more than {self.limits.max_answer_bytes} bytes in answer to one command")

    async def _read(self, answer: _Answer, reading, ready: bool):
        """One read, while the server is not silent for longer than the timeout.

        ``ready`` when what it reads is already buffered: then it cannot wait, and needs no timer (most reads
        of a long answer are so: the socket hands over many responses at once). Otherwise the server's silence
        is timed from now: everything it sent before has been read.
        """
        try:
            if ready:
                return await reading
            async with asyncio.timeout(self.timeout):
                return await reading
        except TimeoutError:
            raise ConnectionLost(f"{self.where}: no answer for {self.timeout:.0f} s") from None
        except (asyncio.IncompleteReadError, OSError, ConnectionError):
            raise ConnectionLost(f"{self.where}: connection lost") from None
        except asyncio.LimitOverrunError:
            raise self._misbehaved(answer, f"a line longer than {READ_LIMIT} bytes") from None

    def _buffered(self) -> bytes | bytearray:
        """What the reader holds, read from the socket but not yet by this client (empty when it cannot say)."""
        return getattr(self._reader, "_buffer", b"")  # asyncio.StreamReader's buffer; it has no public peek

    async def _read_parts(self, answer: _Answer | None = None) -> list[bytes]:
        """One response: text and literal parts alternating."""
        answer = answer or self._answer("response")
        parts: list[bytes] = []
        while True:
            line = await self._read(answer, self._reader.readuntil(b"\r\n"), b"\r\n" in self._buffered())
            self._took(answer, len(line))
            parts.append(line[:-2])
            match = _LITERAL.search(line) if line.endswith(b"}\r\n") else None
            if match is None:
                return parts
            parts.append(await self._read_literal(answer, match.group(1), parts))

    async def _read_literal(self, answer: _Answer, announced: bytes, parts: list[bytes]) -> bytes:
        """A literal's bytes; one over :attr:`Limits.max_literal` (or refused by the answer) is read past, not kept."""
        room = self.limits.max_answer_bytes - answer.bytes
        size = int(announced) if len(announced) <= len(str(room)) else room + 1
        if size > room:
            raise self._misbehaved(answer, f"a literal of {announced.decode()} bytes{_uid_in(parts)}, more than the "
                                           f"{self.limits.max_answer_bytes} bytes one answer may hold")
        why_not = ""
        if size > self.limits.max_literal:
            why_not = (f"{size} bytes, over the largest message this client holds ({self.limits.max_literal} bytes: "
                       f"--max-message-size)")
        elif answer.keep_literal is not None:
            why_not = answer.keep_literal(size)
        pieces: list[bytes] = []
        remaining = size
        while remaining:
            piece = await self._read(answer, self._reader.read(min(remaining, _CHUNK)), bool(self._buffered()))
            if not piece:
                raise ConnectionLost(f"{self.where}: connection lost")
            self._took(answer, len(piece))
            remaining -= len(piece)
            if not why_not:
                pieces.append(piece)
        return wire.Unread(size, why_not) if why_not else b"".join(pieces)


_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_UID = re.compile(rb"\bUID (\d{1,10})\b", re.IGNORECASE)


class _Fetched:
    """FETCH answers for the UIDs asked, as they arrive: one entry per UID (answers for it merged, first wins)."""

    def __init__(self, asked: Callable[[int], bool]):
        self.asked = asked
        self.items: dict[int, dict[str, Token]] = {}

    def __call__(self, response: Untagged) -> bool:
        """Take one FETCH response; False when it adds nothing (a UID not asked for, an answer repeated)."""
        parts = response.parts
        match = _BODY.fullmatch(parts[0]) if len(parts) == 3 and parts[2] == b")" else None
        # ``* 4 FETCH (UID 7 BODY[] {n}`` literal ``)``, as servers send a body asked alone: its items without tokens
        found = {"UID": match[1].decode(), "BODY[]": parts[1]} if match else wire.fetch_items(response.tokens())
        uid = _number(found.get("UID"))
        if uid is None or not self.asked(uid):
            return False
        merged = self.items.setdefault(uid, {})
        added = [key for key in found if key not in merged]
        for key in added:
            merged[key] = found[key]
        return bool(added)


def _personal(untagged: list[Untagged]) -> Namespace | None:
    """The personal namespace of a NAMESPACE answer, or None when it names none."""
    for response in untagged:
        tokens = response.tokens()
        personal = tokens[0] if tokens else None
        if isinstance(personal, list) and personal and isinstance(personal[0], list) and len(personal[0]) > 1:
            prefix, delimiter = personal[0][0], personal[0][1]
            if isinstance(prefix, (str, bytes)):
                return Namespace(wire.as_text(prefix), _delimiter(delimiter) or "/")
    return None


def _folders_of(untagged: list[Untagged]) -> list[Folder]:
    """The folders of a LIST or LSUB answer; an entry that is not one (no name, a name too large) is skipped."""
    folders = []
    for response in untagged:
        tokens = response.tokens()
        if len(tokens) < 3 or not isinstance(tokens[0], list) or not isinstance(tokens[2], (str, bytes)):
            continue
        if isinstance(tokens[2], wire.Unread) or not tokens[2]:
            continue
        folders.append(Folder(wire.as_text(tokens[2]), _delimiter(tokens[1]),
                              frozenset(a for a in tokens[0] if isinstance(a, str))))
    return folders


def _subscribed(listed: list[Folder]) -> set[str]:
    """Names of an LSUB answer's subscribed folders: an entry marked ``\\Noselect`` (or ``\\NonExistent``) is the
    parent of a subscribed folder, not itself subscribed (RFC 3501, 6.3.9)."""
    return {folder.name for folder in listed if folder.selectable}


def _status_key(name: str) -> str:
    """A folder name as STATUS answers are matched: INBOX in any case is INBOX."""
    return "INBOX" if name.upper() == "INBOX" else name


def _status_values(tokens: list[Token]) -> FolderStatus:
    """The values of one ``* STATUS name (KEY value ...)`` answer; a value that is not a number counts as 0."""
    values = tokens[1] if len(tokens) > 1 and isinstance(tokens[1], list) else []
    found = {str(values[i]).upper(): _number(values[i + 1]) for i in range(0, len(values) - 1, 2)}
    return FolderStatus(found.get("UIDVALIDITY") or 0, found.get("UIDNEXT") or 0, found.get("MESSAGES") or 0,
                        found.get("HIGHESTMODSEQ"))


class _Listing(_Fetched):
    """A listing's FETCH answers turned into :class:`Listed` records as they arrive.

    A UID's items are merged as :class:`_Fetched` does (first answer wins)
    only until the ones asked for are all there; then its tokens are dropped
    and a small record kept, so a folder of 100,000 messages is held as
    100,000 records, never as their parsed answers.
    """

    def __init__(self, asked: Callable[[int], bool], details: bool):
        super().__init__(asked)
        self.details = details
        self.needed = ("FLAGS", "RFC822.SIZE", "INTERNALDATE") if details else ("FLAGS",)
        self.listed: dict[int, Listed] = {}

    def __call__(self, response: Untagged) -> bool:
        match = _LISTED.fullmatch(response.parts[0]) if len(response.parts) == 1 else None
        if match and (match[3] is not None) == self.details and (uid := int(match[1])) not in self.items:
            # The plain form nearly every server sends (:data:`_LISTED`): read without its tokens, to the same record.
            if uid in self.listed or not self.asked(uid):
                return False
            self.listed[uid] = self._made(uid, _flags_written(match[2]), match[3] and match[3].decode(),
                                          match[4] and match[4].decode("utf-8", "surrogateescape"))
            return True
        found = wire.fetch_items(response.tokens())
        uid = _number(found.get("UID"))
        if uid is None or uid in self.listed or not self.asked(uid):
            return False
        merged = self.items.setdefault(uid, {})
        added = [key for key in found if key not in merged]
        for key in added:
            merged[key] = found[key]
        if all(key in merged for key in self.needed):
            self.listed[uid] = self._record(uid, self.items.pop(uid))
        return bool(added)

    def _record(self, uid: int, found: dict[str, Token]) -> Listed:
        return self._made(uid, _flags(found.get("FLAGS")), found.get("RFC822.SIZE"), found.get("INTERNALDATE"))

    def _made(self, uid: int, flagged: tuple[frozenset[str], list[str] | tuple[str, ...]], size: Token,
              date: Token) -> Listed:
        """The record of a UID from its checked flags (and their problems) and, with details, its size and date."""
        flags, problems = flagged[0], tuple(flagged[1])
        if not self.details:
            return Listed(uid, flags, 0, "", problems)
        # a size that is not a number counts as 0: memory is charged by the bytes received anyway
        date, problem = _date(date)
        return Listed(uid, flags, _number(size) or 0, date, problems + tuple(problem))

    def result(self) -> list[Listed]:
        """Every UID answered, in UID order (one whose answer lacked an item asked for, with what it had)."""
        for uid in list(self.items):
            self.listed[uid] = self._record(uid, self.items.pop(uid))
        return [self.listed[uid] for uid in sorted(self.listed)]


# A listing's answer as nearly every server writes it: ``* 4 FETCH (UID 7 FLAGS (\\Seen $Label1))``, with
# `` RFC822.SIZE 1234 INTERNALDATE "..."`` before the last parenthesis when asked. Flags are atoms (no space,
# parenthesis, bracket, quote, brace or control character) one space apart, the date has no escape: a subset of
# what the tokens allow, read to the same values. Any other answer is read by its tokens.
_WORD = rb'[^ ()\[\]"{}\x00-\x1f\x7f]+'
_LISTED = re.compile(rb'\* \d{1,10} FETCH \(UID (\d{1,10}) FLAGS \(((?:' + _WORD + rb'(?: ' + _WORD + rb')*)?)\)'
                     rb'(?: RFC822\.SIZE (\d{1,19}) INTERNALDATE "([^"\\\x00-\x1f\x7f]*)")?\)')


_BODY = re.compile(rb"\* \d{1,10} FETCH \(UID (\d{1,10}) BODY\[\] \{\d{1,20}\+?\}")


@lru_cache(maxsize=1024)
def _flags_written(text: bytes) -> tuple[frozenset[str], tuple[str, ...]]:
    """:func:`_flags` of a FLAGS list's text as :data:`_LISTED` found it; a folder has few such texts: kept."""
    words = text.split(b" ") if text else []
    flags, problems = _flags([None if w.upper() == b"NIL" else w.decode("utf-8", "surrogateescape") for w in words])
    return flags, tuple(problems)


def _number(token: Token) -> int | None:
    """A number the server sent, or None when it is not one."""
    return int(token) if isinstance(token, str) and token.isascii() and token.isdigit() and len(token) < 20 else None


def _flags(token: Token) -> tuple[frozenset[str], list[str]]:
    """Valid flags of a server's FLAGS (without the server's own \\Recent), and a problem per dropped one.

    Equal sets are one object (:func:`_shared`): a folder of 100,000 messages has a few combinations of flags.
    """
    flags, dropped = wire.flags_of(token)
    return _shared(flags - SERVER_FLAGS), [f"flag '{wire.printable(f, 80)}' dropped: not an IMAP flag" for f in dropped]


@lru_cache(maxsize=1024)
def _flag_list(flags: frozenset[str]) -> bytes:
    """The flags a message is stored with (the server's own left out), written; a folder has few sets: kept."""
    return wire.flag_list(flags - SERVER_FLAGS)


_SHARED: dict[frozenset[str], frozenset[str]] = {}


def _shared(flags: frozenset[str]) -> frozenset[str]:
    """One object per distinct set of flags (at most 4,096 kept: a hostile server cannot grow it without bound)."""
    found = _SHARED.get(flags)
    if found is None:
        found = flags
        if len(_SHARED) < 4096:
            _SHARED[flags] = flags
    return found


def _date(token: Token) -> tuple[str, list[str]]:
    """A server's INTERNALDATE in the form sent back, or "" and the problem."""
    date = wire.internaldate(token)
    if date or token is None:
        return date, []
    return "", [f"its date (INTERNALDATE {_shown(token)}) is not a date: not carried"]


def _shown(token: Token) -> str:
    return f"'{wire.printable(wire.as_text(token), 80)}'" if not isinstance(token, list) else "(a list)"


def _delimiter(token: Token) -> str | None:
    """A hierarchy delimiter: one character, or None (NIL, or anything else a server sends)."""
    text = wire.as_text(token) if isinstance(token, (str, bytes)) else ""
    return text if len(text) == 1 and text.isprintable() else None


def _name(where: str, folder: str) -> bytes | Literal:
    """A folder name as an argument, through the one string writer; one IMAP cannot carry fails that command."""
    try:
        return wire.quote(folder)
    except ValueError as exc:
        raise CommandFailed(f"{where}: folder {folder!r} cannot be named over IMAP: {exc}") from None


def _said(text: bytes | str) -> str:
    """Server text to show in an error: printable, and short."""
    return wire.printable(text.decode("utf-8", "replace") if isinstance(text, bytes) else text)


def _uid_in(parts: list[bytes]) -> str:
    match = _UID.search(b" ".join(parts[::2])[-4096:])
    return f" for UID {match.group(1).decode()}" if match else ""


def _appended_uids(tagged: Tagged, count: int) -> list[int] | None:
    code = (tagged.code or "").split()
    if len(code) == 3 and code[0].upper() == "APPENDUID":
        try:
            uids = wire.parse_uid_set(code[2], limit=count)
        except ValueError:
            return None
        if len(uids) == count:
            return uids
    return None


def _failure(where: str, what: str, folder: str | None, response: Tagged) -> CommandFailed:
    code = (response.code or "").split(" ", 1)[0].upper()
    said = _said(response.text)
    place = f"{where}: {what}" + (f" {folder!r}" if folder else "")
    text = f"{place}: {response.status} {said}".rstrip()
    if code == "OVERQUOTA" or (what == "APPEND" and "quota" in response.text.lower()):
        return OverQuota(f"{where}: over quota ({said})", code, said)
    if code == "NONEXISTENT" or (what in ("SELECT", "EXAMINE", "STATUS") and "exist" in response.text.lower()):
        return NoSuchFolder(f"{where}: no folder {folder!r} ({said})", code, said)
    return CommandFailed(text, code, said)
