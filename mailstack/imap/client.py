"""An asyncio IMAP4rev1 client for copying mail: pipelined, LITERAL+, MULTIAPPEND, UIDPLUS.

Callers see folders, messages and flags; the protocol stays here. Errors are
:class:`ImapError` subclasses whose messages never carry a password.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass
from typing import Sequence

from mailstack.imap import wire
from mailstack.imap.wire import Literal, Tagged, Untagged

READ_LIMIT = 16 * 1024 * 1024
# Flags a client cannot set: the server owns them.
SERVER_FLAGS = frozenset({"\\Recent"})


class ImapError(Exception):
    """An IMAP operation failed; the message says what and where, never a password."""


class ConnectError(ImapError):
    """The server cannot be reached, or TLS failed."""


class ConnectionLost(ImapError):
    """The connection dropped or stopped answering mid-session (worth a retry)."""


class AuthFailed(ImapError):
    """The server refused the user name or password."""


class CommandFailed(ImapError):
    """The server answered NO or BAD."""

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


@dataclass(frozen=True)
class FolderStatus:
    uidvalidity: int
    uidnext: int
    messages: int
    highestmodseq: int | None = None


@dataclass(frozen=True)
class Listed:
    """A message as listed: UID and flags, with size and internal date when asked for."""

    uid: int
    flags: frozenset[str]
    size: int = 0
    internaldate: str = ""


@dataclass(frozen=True)
class Message:
    """A whole message: its exact bytes, flags and internal date."""

    uid: int
    flags: frozenset[str]
    internaldate: str
    body: bytes


class ImapConnection:
    """One logged-in (or about to be) IMAP session."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str, timeout: float):
        self._reader = reader
        self._writer = writer
        self.where = where
        self.timeout = timeout
        self.capabilities: set[str] = set()
        self._tag = 0
        self.selected: str | None = None

    # ------------------------------------------------------------ session

    @classmethod
    async def open(cls, host: str, port: int, *, tls: bool, cafile: str | None = None,
                   timeout: float = 60.0, where: str | None = None, address: str | None = None) -> "ImapConnection":
        """Connect and read the greeting; ``tls`` for imaps (certificate and host name checked).

        ``address`` connects there instead of resolving ``host``; the certificate is still checked
        against ``host`` (a host not yet in DNS, or reached on a private address).
        """
        where = where or f"{host}:{port}"
        context = None
        if tls:
            context = ssl.create_default_context()  # the system's CAs, and cafile's besides
            if cafile:
                context.load_verify_locations(cafile)
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
        connection = cls(reader, writer, where, timeout)
        greeting = await connection._read_parts()
        if greeting[0].startswith(b"* BYE"):
            connection.close()
            raise ConnectError(f"{where} refused the session: {greeting[0][6:].decode('utf-8', 'replace')}")
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
            await self.command(b"LOGIN", wire.quote(user), wire.quote(password), what="LOGIN")
        except CommandFailed as exc:
            raise AuthFailed(f"{self.where}: login as {user!r} refused ({exc.server_text}): "
                             f"check the user name and password") from None
        await self.capability()

    async def capability(self) -> set[str]:
        untagged, _ = await self.command(b"CAPABILITY")
        for response in untagged:
            if response.kind == "CAPABILITY":
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
            untagged, _ = await self.command(b"NAMESPACE")
            for response in untagged:
                if response.kind == "NAMESPACE":
                    personal = response.tokens()[0]
                    if isinstance(personal, list) and personal and isinstance(personal[0], list):
                        prefix, delimiter = personal[0][0], personal[0][1]
                        return Namespace(wire.as_text(prefix), wire.as_text(delimiter) or "/")
        untagged, _ = await self.command(b"LIST", b'""', b'""')
        for response in untagged:
            if response.kind == "LIST":
                return Namespace("", wire.as_text(response.tokens()[1]) or "/")
        return Namespace("", "/")

    async def list_folders(self) -> list[Folder]:
        return await self._list(b"LIST")

    async def subscribed(self) -> set[str]:
        """Names of subscribed folders (wire form).

        An LSUB entry marked ``\\Noselect`` (or ``\\NonExistent``) is the parent of a
        subscribed folder, not itself subscribed (RFC 3501, 6.3.9).
        """
        return {folder.name for folder in await self._list(b"LSUB") if folder.selectable}

    async def _list(self, verb: bytes) -> list[Folder]:
        untagged, _ = await self.command(verb, b'""', b'"*"')
        folders = []
        for response in untagged:
            if response.kind == verb.decode():
                attributes, delimiter, name = response.tokens()[:3]
                folders.append(Folder(wire.as_text(name), wire.as_text(delimiter) if delimiter else None,
                                      frozenset(str(a) for a in attributes or [])))
        return folders

    async def create(self, name: str) -> None:
        try:
            await self.command(b"CREATE", wire.quote(name))
        except CommandFailed as exc:
            if (exc.code or "").upper() != "ALREADYEXISTS":
                raise

    async def subscribe(self, name: str) -> None:
        await self.command(b"SUBSCRIBE", wire.quote(name))

    async def status(self, name: str) -> FolderStatus:
        """UIDVALIDITY, UIDNEXT, MESSAGES (and HIGHESTMODSEQ with CONDSTORE) without selecting."""
        items = b"(UIDVALIDITY UIDNEXT MESSAGES" + (b" HIGHESTMODSEQ)" if "CONDSTORE" in self.capabilities else b")")
        untagged, _ = await self.command(b"STATUS", wire.quote(name), items, folder=name)
        for response in untagged:
            if response.kind == "STATUS":
                tokens = response.tokens()
                values = tokens[1] if len(tokens) > 1 and isinstance(tokens[1], list) else []
                found = {str(values[i]).upper(): int(values[i + 1]) for i in range(0, len(values) - 1, 2)}
                return FolderStatus(found.get("UIDVALIDITY", 0), found.get("UIDNEXT", 0), found.get("MESSAGES", 0),
                                    found.get("HIGHESTMODSEQ"))
        raise CommandFailed(f"{self.where}: no STATUS for folder {name!r}")

    async def select(self, name: str, *, readonly: bool = False) -> FolderStatus:
        """SELECT (or EXAMINE when ``readonly``: flags and \\Recent untouched)."""
        untagged, _ = await self.command(b"EXAMINE" if readonly else b"SELECT", wire.quote(name), folder=name)
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

    async def list_messages(self, uids: str = "1:*", *, details: bool = False) -> list[Listed]:
        """UID and flags of messages in the selected folder; size and internal date with ``details``."""
        items = b"(UID FLAGS RFC822.SIZE INTERNALDATE)" if details else b"(UID FLAGS)"
        untagged, _ = await self.command(b"UID FETCH", uids.encode(), items)
        listed = []
        for response in untagged:
            if response.kind != "FETCH":
                continue
            found = wire.fetch_items(response.tokens())
            if "UID" not in found:
                continue
            listed.append(Listed(int(found["UID"]), _flags(found.get("FLAGS")), int(found.get("RFC822.SIZE") or 0),
                                 wire.as_text(found.get("INTERNALDATE"))))
        return listed

    async def search_since(self, day) -> list[int]:
        """UIDs of messages whose internal date is on or after ``day``."""
        untagged, _ = await self.command(b"UID SEARCH SINCE", wire.imap_date(day).encode())
        uids: list[int] = []
        for response in untagged:
            if response.kind == "SEARCH":
                uids.extend(int(x) for x in response.text().split() if x.isdigit())
        return uids

    async def fetch_messages(self, uids: Sequence[int]) -> list[Message]:
        """Whole messages (bytes as stored, flags, internal date); \\Seen is not set (BODY.PEEK)."""
        untagged, _ = await self.command(b"UID FETCH", wire.uid_set(uids).encode(),
                                         b"(UID FLAGS INTERNALDATE BODY.PEEK[])")
        messages = []
        for response in untagged:
            if response.kind != "FETCH":
                continue
            found = wire.fetch_items(response.tokens())
            if "UID" in found and "BODY[]" in found:
                messages.append(Message(int(found["UID"]), _flags(found.get("FLAGS")),
                                        wire.as_text(found.get("INTERNALDATE")), wire.as_bytes(found["BODY[]"])))
        return messages

    async def fetch_headers(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The header section of each message, to recognise a message without a state entry."""
        untagged, _ = await self.command(b"UID FETCH", wire.uid_set(uids).encode(), b"(UID BODY.PEEK[HEADER])")
        headers = {}
        for response in untagged:
            if response.kind == "FETCH":
                found = wire.fetch_items(response.tokens())
                if "UID" in found:
                    headers[int(found["UID"])] = wire.as_bytes(found.get("BODY[HEADER]"))
        return headers

    async def append_many(self, folder: str, messages: Sequence[Message]) -> list[int] | None:
        """Append messages (MULTIAPPEND when offered: one transaction); their new UIDs, or None without UIDPLUS.

        All or nothing: on failure nothing of the batch is stored.
        """
        if "MULTIAPPEND" in self.capabilities:
            args: list[bytes | Literal] = [b"APPEND", wire.quote(folder)]
            for message in messages:
                args += [wire.flag_list(message.flags - SERVER_FLAGS), wire.quote(message.internaldate),
                         Literal(message.body)]
            _, tagged = await self.command(*args, folder=folder)
            return _appended_uids(tagged, len(messages))
        uids: list[int] = []
        for message in messages:
            _, tagged = await self.command(b"APPEND", wire.quote(folder), wire.flag_list(message.flags - SERVER_FLAGS),
                                           wire.quote(message.internaldate), Literal(message.body), folder=folder)
            got = _appended_uids(tagged, 1)
            if got is None:
                return None
            uids += got
        return uids

    async def store_flags(self, changes: dict[frozenset[str], list[int]]) -> None:
        """Set the exact flags of messages, pipelined: {flags: [uid, ...]}."""
        tags = []
        for flags, uids in changes.items():
            tags.append(await self._send(b"UID STORE", wire.uid_set(uids).encode(), b"FLAGS.SILENT",
                                         wire.flag_list(flags - SERVER_FLAGS)))
        for tag in tags:
            await self._complete(tag, what="UID STORE", folder=self.selected)

    # ------------------------------------------------------------ plumbing

    async def command(self, *args: bytes | Literal, what: str | None = None,
                      folder: str | None = None) -> tuple[list[Untagged], Tagged]:
        """Send one command and read to its completion: (untagged responses, tagged response)."""
        what = what or (args[0].decode() if isinstance(args[0], bytes) else "command")
        tag = await self._send(*args)
        return await self._complete(tag, what=what, folder=folder)

    async def _send(self, *args: bytes | Literal) -> str:
        """Write a command; literals are non-synchronising with LITERAL+, else wait for ``+``."""
        self._tag += 1
        tag = f"M{self._tag}"
        plus = "LITERAL+" in self.capabilities
        chunk = bytearray(tag.encode())
        try:
            for arg in args:
                chunk += b" "
                if isinstance(arg, Literal):
                    if plus:
                        chunk += b"{%d+}\r\n" % len(arg.data)
                        self._writer.write(bytes(chunk))
                        self._writer.write(arg.data)
                    else:
                        chunk += b"{%d}\r\n" % len(arg.data)
                        self._writer.write(bytes(chunk))
                        await self._await_continuation()
                        self._writer.write(arg.data)
                    chunk = bytearray()
                else:
                    chunk += arg
            chunk += b"\r\n"
            self._writer.write(bytes(chunk))
            await self._writer.drain()
        except (OSError, ConnectionError) as exc:
            raise ConnectionLost(f"{self.where}: connection lost ({exc.__class__.__name__})") from None
        return tag

    async def _await_continuation(self) -> None:
        await self._writer.drain()
        while True:
            parts = await self._read_parts()
            response = wire.classify(parts)
            if response is None:
                return
            if isinstance(response, Tagged):
                raise CommandFailed(f"{self.where}: literal refused: {response.text}", response.code)

    async def _complete(self, tag: str, *, what: str, folder: str | None = None) -> tuple[list[Untagged], Tagged]:
        untagged: list[Untagged] = []
        while True:
            parts = await self._read_parts()
            response = wire.classify(parts)
            if isinstance(response, Untagged):
                if response.kind == "BYE" and what != "LOGOUT":
                    raise ConnectionLost(f"{self.where}: server closed the session: {response.text()}")
                untagged.append(response)
            elif isinstance(response, Tagged) and wire.tag_of(parts) == tag:
                if not response.ok:
                    raise _failure(self.where, what, folder, response)
                return untagged, response

    async def _read_parts(self) -> list[bytes]:
        """One response: text and literal parts alternating."""
        parts: list[bytes] = []
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    line = await self._reader.readuntil(b"\r\n")
                    if line.endswith(b"}\r\n"):
                        match = _LITERAL.search(line)
                        if match:
                            parts.append(line[:-2])
                            parts.append(await self._reader.readexactly(int(match.group(1))))
                            continue
                    parts.append(line[:-2])
                    return parts
        except TimeoutError:
            raise ConnectionLost(f"{self.where}: no answer for {self.timeout:.0f} s") from None
        except (asyncio.IncompleteReadError, OSError, ConnectionError):
            raise ConnectionLost(f"{self.where}: connection lost") from None
        except asyncio.LimitOverrunError:
            raise ConnectionLost(f"{self.where}: response line too long") from None


_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


def _flags(token) -> frozenset[str]:
    return frozenset(str(f) for f in token or [] if f and str(f) not in SERVER_FLAGS)


def _appended_uids(tagged: Tagged, count: int) -> list[int] | None:
    code = (tagged.code or "").split()
    if len(code) == 3 and code[0].upper() == "APPENDUID":
        uids = wire.parse_uid_set(code[2])
        if len(uids) == count:
            return uids
    return None


def _failure(where: str, what: str, folder: str | None, response: Tagged) -> CommandFailed:
    code = (response.code or "").split(" ", 1)[0].upper()
    place = f"{where}: {what}" + (f" {folder!r}" if folder else "")
    text = f"{place}: {response.status} {response.text}".rstrip()
    if code == "OVERQUOTA" or (what == "APPEND" and "quota" in response.text.lower()):
        return OverQuota(f"{where}: over quota ({response.text})", code, response.text)
    if code == "NONEXISTENT" or (what in ("SELECT", "EXAMINE", "STATUS") and "exist" in response.text.lower()):
        return NoSuchFolder(f"{where}: no folder {folder!r} ({response.text})", code, response.text)
    return CommandFailed(text, code, response.text)
