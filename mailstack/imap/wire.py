"""IMAP wire format: parsing server responses and writing command arguments.

Pure functions over bytes; the connection (:mod:`mailstack.imap.client`)
reads a response as alternating text and literal parts and hands them here.

What a server sends is untrusted. Anything of it that goes back out (to the
other server, or into a file) passes through one of the writers here:
:func:`quote` for strings, :func:`flag_list` for flags (only valid flags, see
:func:`flag`), :func:`date_time` for dates, :func:`uid_set` for UIDs; and
anything shown to the operator through :func:`printable`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Iterable, Union

Token = Union[str, bytes, None, list]

# RFC 3501: flag = "\Answered" / "\Flagged" / "\Deleted" / "\Seen" / "\Draft" / flag-keyword (an atom)
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_KNOWN_SYSTEM_FLAGS = {f.lower(): f for f in (*SYSTEM_FLAGS, "\\Recent")}
# ATOM-CHAR: any CHAR (7-bit, no CTL) except atom-specials ( ) { SP % * " \ ]
_ATOM = re.compile(r"[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]+")
MAX_FLAG_LENGTH = 255  # no server needs longer keywords; a longer one is dropped like any invalid flag

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


# The tokens of a text part in one pass: "(", ")", a closed quoted string (its escapes whole), or an atom that
# ends where an atom ends (space, parenthesis, end of text), its [...] sections whole when they hold no bracket.
# Split by it, a well-formed part leaves only spaces between its tokens; anything else there (an unclosed quote,
# brackets the pattern cannot pair, a literal's "{" not where a literal may be) sends the part to _walk_part.
# It splits the decoded text: every place it cuts is an ASCII character, where UTF-8 decoding (surrogateescape
# too) cuts alike, so each token is what decoding its own bytes gives. Escapes are undone on the bytes: a
# backslash may stand between the bytes of one character.
_TOKENS = re.compile(r'([()]|"[^"\\]*(?:\\[\s\S][^"\\]*)*"'
                     r'|(?:[^ ()\[\]"{]|\[[^\[\]]*\])[^ ()\[\]]*(?:\[[^\[\]]*\][^ ()\[\]]*)*)')
_ESCAPED = re.compile(rb"\\([\s\S])")


def parse_tokens(parts: list[bytes], skip: int = 0) -> list[Token]:
    """Parse response parts (text, literal, text, ...) into nested tokens.

    A literal counts where its ``{n}`` ends a text part; a ``)`` with no list open is ignored; a quoted string
    not closed runs to the end of its text part; an atom's ``[...]`` may hold spaces and parentheses (brackets
    counted); ``NIL`` in any case is None.
    """
    root: list[Token] = []
    stack = [root]
    for index in range(0, len(parts), 2):
        text = parts[index]
        literal = parts[index + 1] if index + 1 < len(parts) else None
        start = skip if index == 0 else 0
        at_literal = text.rfind(b"{") if literal is not None and text.endswith(b"}") else -1
        if at_literal < start:
            end = len(text)  # no literal, or one before where reading starts
        elif at_literal == start or text[at_literal - 1] in b" ()":
            end = at_literal  # its "{" starts a token: the tokens up to it, then the literal
        else:
            end = -1  # its "{" may be inside a token
        pieces = _TOKENS.split(text[start:end].decode("utf-8", "surrogateescape")) if end >= 0 else None
        if pieces is None or "".join(pieces[0::2]).strip(" "):
            _walk_part(text, start, literal, stack)
            continue
        top = stack[-1]
        for token in pieces[1::2]:
            if token == "(":
                new: list[Token] = []
                top.append(new)
                stack.append(new)
                top = new
            elif token == ")":
                if len(stack) > 1:
                    stack.pop()
                    top = stack[-1]
            elif token[0] == '"':
                token = token[1:-1]
                top.append(_unescaped(token) if "\\" in token else token)
            else:
                top.append(None if len(token) <= 3 and token.upper() == "NIL" else token)  # upper() never shortens
        if end == at_literal:
            top.append(literal)
    return root


def _unescaped(quoted: str) -> str:
    """A quoted string's text without its escapes (``\\"`` is ``"``), undone on its bytes."""
    raw = quoted.encode("utf-8", "surrogateescape")  # the bytes it was decoded from, exactly
    return _ESCAPED.sub(rb"\1", raw).decode("utf-8", "surrogateescape")


def _walk_part(text: bytes, i: int, literal: bytes | None, stack: list[list[Token]]) -> None:
    """One text part (from ``i``) read byte by byte, as the grammar reads it: for parts _TOKENS cannot split."""
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


class Unread(bytes):
    """A literal the client did not keep (too large to hold): empty, with the size the server announced."""

    def __new__(cls, size: int, reason: str):
        unread = super().__new__(cls, b"")
        unread.size, unread.reason = size, reason
        return unread


def quote(value: str) -> bytes | Literal:
    """The one writer of string arguments: quoted when it can be, else a literal (CR, LF or 8-bit).

    Raises ValueError for NUL, which IMAP cannot carry in any form.
    """
    raw = value.encode("utf-8", "surrogateescape")
    if 0 in raw:
        raise ValueError(f"{printable(value)!r} contains a NUL character, which IMAP cannot carry")
    if any(b in raw for b in (10, 13)) or any(b > 0x7F for b in raw):
        return Literal(raw)
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def flag(value: Token) -> str | None:
    """A flag as it may be sent: a known system flag (in its usual spelling) or a keyword atom; else None.

    RFC 3501 allows other ``\\``-flags as extensions, but no server sets them
    on messages: one is more likely an attack than a flag, and is dropped.
    """
    return _flag_text(value) if isinstance(value, str) else None


@lru_cache(maxsize=1024)
def _flag_text(value: str) -> str | None:
    """:func:`flag` of a string; a mailbox uses few flags, each on many messages: kept."""
    if not value or len(value) > MAX_FLAG_LENGTH:
        return None
    if value.startswith("\\"):
        return _KNOWN_SYSTEM_FLAGS.get(value.lower())
    return value if _ATOM.fullmatch(value) else None


def flags_of(token: Token) -> tuple[frozenset[str], tuple[str, ...]]:
    """A server's FLAGS list: the valid flags, and what was dropped (as text, for the report)."""
    if token is None:
        return frozenset(), ()
    if not isinstance(token, list):
        return frozenset(), (as_text(token),)
    kept, dropped = set(), []
    for item in token:
        checked = flag(item)
        if checked is not None:
            kept.add(checked)
        else:
            dropped.append(as_text(item) if not isinstance(item, list) else "(...)")
    return frozenset(kept), tuple(dropped)


def flag_list(flags: Iterable[str]) -> bytes:
    """``(\\Seen $Label)``: the one writer of flags; ValueError for anything that is not a valid flag."""
    checked = []
    for value in flags:
        if flag(value) != value:
            raise ValueError(f"{printable(str(value))!r} is not an IMAP flag")
        checked.append(value)
    return b"(" + " ".join(sorted(checked)).encode("ascii") + b")"


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


def parse_uid_set(text: str, limit: int | None = None) -> list[int]:
    """"1:3,7" -> [1, 2, 3, 7], in the order given (APPENDUID lists UIDs in append order).

    ValueError when it is not a UID set, or holds more than ``limit`` UIDs.
    """
    uids: list[int] = []
    for piece in text.split(","):
        low, _, high = piece.partition(":")
        if high:
            a, b = int(low), int(high)
            if limit is not None and len(uids) + abs(b - a) + 1 > limit:
                raise ValueError(f"more than {limit} UIDs")
            step = 1 if b >= a else -1
            uids.extend(range(a, b + step, step))
        elif low:
            uids.append(int(low))
        if limit is not None and len(uids) > limit:
            raise ValueError(f"more than {limit} UIDs")
    return uids


_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}
_DATE_TIME = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})", re.ASCII)


def parse_internaldate(value: str) -> datetime | None:
    """INTERNALDATE ``17-Jul-1996 02:44:25 -0700`` (RFC 3501 date-time) with its zone; None when it is not one."""
    match = _DATE_TIME.fullmatch(value.strip()) if isinstance(value, str) else None
    return _moment(match) if match else None


def _moment(match: re.Match) -> datetime | None:
    """The moment a :data:`_DATE_TIME` match names; None when there is none (31-Feb, 25:00, +2400)."""
    month = _MONTHS.get(match[2].title())
    if month is None:
        return None
    try:
        moment = datetime(int(match[3]), month, int(match[1]), int(match[4]), int(match[5]), int(match[6]),
                          tzinfo=_zone(match[7], match[8], match[9]))
        moment.timestamp()  # a date at the edge of the calendar may not convert
    except (ValueError, OverflowError):
        return None
    return moment


@lru_cache(maxsize=64)
def _zone(sign: str, hours: str, minutes: str) -> timezone:
    """The zone of ``+0930``; ValueError when it is none (24 hours or more). A mailbox has few: kept."""
    return timezone(timedelta(hours=int(hours), minutes=int(minutes)) * (-1 if sign == "-" else 1))


def format_internaldate(moment: datetime) -> str:
    """A date for APPEND: ``14-Nov-2023 22:13:20 +0000`` (English month names whatever the locale)."""
    utcoffset = moment.utcoffset()
    offset = int(utcoffset.total_seconds() // 60) if utcoffset is not None else 0
    sign = "-" if offset < 0 else "+"
    return (f"{moment.day:02d}-{_MONTH_NAMES[moment.month - 1]}-{moment.year:04d} "
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} "
            f"{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}")


def internaldate(value: Token) -> str:
    """A server's INTERNALDATE in the form this client sends back; "" when it is not a date."""
    match = _DATE_TIME.fullmatch(value.strip()) if isinstance(value, str) else None
    if match and _written_as_sent(match) and _plainly_valid(match):
        return match[0]  # as nearly every date a server sends: no moment needs to be made of it
    moment = _moment(match) if match else None
    if moment is None:
        return ""
    return match[0] if _written_as_sent(match) else format_internaldate(moment)


_DAYS_IN = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _plainly_valid(match: re.Match) -> bool:
    """Whether a date written as sent (month spelled as in _MONTH_NAMES) names a moment, decided without making it:
    a day of that month, a time of day, a zone under 24 hours; years 1 and 9999 (edges) are left to :func:`_moment`."""
    year, month, day = int(match[3]), _MONTHS[match[2]], int(match[1])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return (1 < year < 9999 and 1 <= day <= (_DAYS_IN[month] if month != 2 or leap else 28)
            and match[4] < "24" and match[5] < "60" and match[6] < "60" and match[8] < "24")


def _written_as_sent(match: re.Match) -> bool:
    """Whether a date's text is what :func:`format_internaldate` writes for it (as most servers write it): the day
    in two digits, the month spelled as in _MONTH_NAMES, zone minutes under 60, and no ``-0000``."""
    return (len(match[1]) == 2 and match[2] in _MONTHS and match[9] < "60"
            and not (match[7] == "-" and match[8] == match[9] == "00"))


def internaldate_epoch(value: str) -> int:
    """INTERNALDATE as seconds since the epoch (UTC); ValueError when it is not a date."""
    moment = parse_internaldate(value)
    if moment is None:
        raise ValueError(f"{printable(str(value))!r} is not an IMAP date-time")
    return int(moment.timestamp())


def date_time(value: str) -> bytes:
    """The one writer of APPEND dates: checked to be a date, quoted; ValueError otherwise."""
    text = internaldate(value)
    if not text:
        raise ValueError(f"{printable(str(value))!r} is not an IMAP date-time")
    return b'"' + text.encode("ascii") + b'"'  # digits, English month, sign and spaces: quoted as it is


def imap_date(day) -> str:
    """A date for SEARCH SINCE: ``1-Feb-2024``."""
    return f"{day.day}-{_MONTH_NAMES[day.month - 1]}-{day.year}"


# Control characters (ESC sequences, C1), format characters (bidi overrides, zero-width), line and paragraph
# separators, surrogates (undecodable bytes): never written to a terminal as they are.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def printable(text: str, limit: int | None = 300) -> str:
    """Text a server chose, made safe to show: unsafe characters as ``\\x1b``-style escapes, cut to ``limit``."""
    cut = text if limit is None else text[:limit]
    # str.isprintable() is false for every unsafe category (and for spaces other than " "): most text is
    # printable, and is then returned without a look at each character.
    shown = cut if cut.isprintable() else "".join(
        _escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in cut)
    return shown + ("..." if len(cut) < len(text) else "")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
