"""IMAP wire format: parsing server responses and quoting command arguments.

Pure functions over bytes; the connection (:mod:`mailstack.imap.client`)
reads a response as alternating text and literal parts and hands them here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Union

Token = Union[str, bytes, None, list]

_ATOM_END = frozenset(b" ()")
_CODE = re.compile(r"^\[([^\]]*)\]\s*")


@dataclass(frozen=True)
class Literal:
    """A command argument sent as a literal ``{n+}`` (or synchronising ``{n}``)."""

    data: bytes


@dataclass(frozen=True)
class Untagged:
    """One untagged response ``* ...``: its kind (FETCH, LIST, OK, ...), number if any, and parts."""

    kind: str
    number: int | None
    parts: list[bytes]

    def tokens(self) -> list[Token]:
        """The response after its kind, parsed (lists, strings, literals as bytes, NIL as None)."""
        return parse_tokens(self.parts, skip=self._prefix_len())

    def text(self) -> str:
        """The response after its kind, as text (for OK/NO/BYE and SEARCH)."""
        return self.parts[0][self._prefix_len():].decode("utf-8", "replace").strip()

    def code(self) -> str | None:
        match = _CODE.match(self.text())
        return match.group(1) if match else None

    def _prefix_len(self) -> int:
        head = self.parts[0]
        # "* " + [number " "] + kind
        index = 2
        if self.number is not None:
            index = head.index(b" ", 2) + 1
        return index + len(self.kind)


@dataclass(frozen=True)
class Tagged:
    """The completion of a command: OK, NO or BAD, its response code and text."""

    status: str
    code: str | None
    text: str

    @property
    def ok(self) -> bool:
        return self.status == "OK"


def classify(parts: list[bytes]) -> Untagged | Tagged | None:
    """Untagged or tagged response of parts read from the wire; None for a continuation ``+``."""
    head = parts[0]
    if head.startswith(b"+"):
        return None
    if head.startswith(b"* "):
        words = head[2:].split(b" ", 2)
        if words[0].isdigit():
            return Untagged(words[1].decode("ascii", "replace").upper() if len(words) > 1 else "", int(words[0]), parts)
        return Untagged(words[0].decode("ascii", "replace").upper(), None, parts)
    _, _, rest = head.partition(b" ")
    status, _, text = rest.decode("utf-8", "replace").partition(" ")
    match = _CODE.match(text)
    code = match.group(1) if match else None
    return Tagged(status.upper(), code, text[match.end():] if match else text)


def tag_of(parts: list[bytes]) -> str:
    return parts[0].split(b" ", 1)[0].decode("ascii", "replace")


def parse_tokens(parts: list[bytes], skip: int = 0) -> list[Token]:
    """Parse response parts (text, literal, text, ...) into nested tokens."""
    root: list[Token] = []
    stack = [root]
    for index in range(0, len(parts), 2):
        text = parts[index]
        literal = parts[index + 1] if index + 1 < len(parts) else None
        i = skip if index == 0 else 0
        n = len(text)
        while i < n:
            c = text[i]
            if c == 0x20:
                i += 1
            elif c == 0x28:  # (
                new: list[Token] = []
                stack[-1].append(new)
                stack.append(new)
                i += 1
            elif c == 0x29:  # )
                if len(stack) > 1:
                    stack.pop()
                i += 1
            elif c == 0x22:  # "
                i += 1
                out = bytearray()
                while i < n and text[i] != 0x22:
                    if text[i] == 0x5C and i + 1 < n:
                        i += 1
                    out.append(text[i])
                    i += 1
                i += 1
                stack[-1].append(out.decode("utf-8", "surrogateescape"))
            elif c == 0x7B and literal is not None and text.endswith(b"}") and text.rfind(b"{") == i:
                stack[-1].append(literal)
                i = n
            else:
                start = i
                depth = 0
                while i < n:
                    c = text[i]
                    if c == 0x5B:
                        depth += 1
                    elif c == 0x5D:
                        depth -= 1
                    elif depth <= 0 and c in _ATOM_END:
                        break
                    i += 1
                atom = text[start:i].decode("utf-8", "surrogateescape")
                stack[-1].append(None if atom.upper() == "NIL" else atom)
    return root


def fetch_items(tokens: list[Token]) -> dict[str, Token]:
    """``(UID 5 FLAGS (...) ...)`` of a FETCH response as {"UID": "5", "FLAGS": [...], ...}."""
    items = tokens[0] if tokens and isinstance(tokens[0], list) else []
    return {str(items[i]).upper(): items[i + 1] for i in range(0, len(items) - 1, 2)}


def as_bytes(token: Token) -> bytes:
    """A string token (quoted or literal) as bytes; NIL as empty."""
    if token is None:
        return b""
    if isinstance(token, bytes):
        return token
    return str(token).encode("utf-8", "surrogateescape")


def as_text(token: Token) -> str:
    if isinstance(token, bytes):
        return token.decode("utf-8", "surrogateescape")
    return "" if token is None else str(token)


def quote(value: str) -> bytes | Literal:
    """A string argument: quoted when it can be, else a literal (CR, LF, NUL or 8-bit)."""
    raw = value.encode("utf-8", "surrogateescape")
    if any(b in raw for b in (0, 10, 13)) or any(b > 0x7F for b in raw):
        return Literal(raw)
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def flag_list(flags: Iterable[str]) -> bytes:
    return b"(" + " ".join(sorted(flags)).encode("ascii", "replace") + b")"


def uid_set(uids: Iterable[int]) -> str:
    """Compact UID set: [1, 2, 3, 7, 9, 10] -> "1:3,7,9:10"."""
    ordered = sorted(set(uids))
    ranges: list[str] = []
    start = prev = None
    for uid in ordered:
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            ranges.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    if start is not None:
        ranges.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(ranges)


def parse_uid_set(text: str) -> list[int]:
    """"1:3,7" -> [1, 2, 3, 7], in the order given (APPENDUID lists UIDs in append order)."""
    uids: list[int] = []
    for piece in text.split(","):
        low, _, high = piece.partition(":")
        if high:
            a, b = int(low), int(high)
            step = 1 if b >= a else -1
            uids.extend(range(a, b + step, step))
        elif low:
            uids.append(int(low))
    return uids


_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def internaldate_epoch(value: str) -> int:
    """INTERNALDATE ``17-Jul-1996 02:44:25 -0700`` as seconds since the epoch (UTC)."""
    return int(datetime.strptime(value.strip(), "%d-%b-%Y %H:%M:%S %z").timestamp())


def imap_date(day) -> str:
    """A date for SEARCH SINCE: ``1-Feb-2024``."""
    return f"{day.day}-{list(_MONTHS)[day.month - 1]}-{day.year}"
