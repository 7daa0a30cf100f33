"""The mailbox roster: every mailbox the new host gets, with its quota and password.

Operators keep the roster in a spreadsheet (CSV, XLSX) or a YAML file, one
mailbox per row: address, password, quota and a few optional columns. It is
committed to git, so it never holds a plain-text password: a password cell is
a Dovecot crypt hash or ``generate[:N]``. :func:`hash_roster` turns the
operators' spreadsheet of plain-text passwords into such a roster.

Reading is thin (:func:`_read_table` turns any format into rows of text
cells, each with its file position); every decision is a pure function of
those rows, and all problems of all rows are reported together.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from mailstack.problems import InputError, Problem
from mailstack.domains import normalise_domain
from mailstack.quota import format_quota, parse_quota

# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class PasswordHash:
    """A Dovecot password hash: ``scheme`` such as ``SHA512-CRYPT``, ``value`` the crypt string."""

    scheme: str
    value: str

    def dovecot(self) -> str:
        """The hash as Dovecot's passdb wants it: ``{SCHEME}value``."""
        return f"{{{self.scheme}}}{self.value}"


@dataclass(frozen=True)
class GeneratePassword:
    """The host gets a generated initial password; bumping ``version`` rotates it."""

    version: int = 1


Password = PasswordHash | GeneratePassword


@dataclass(frozen=True)
class Mailbox:
    """One mailbox to create on the new host."""

    address: str
    name: str
    quota: int | None  # bytes; None means unlimited
    protocol: str  # "imap" or "pop": the client protocol on the user's settings sheet
    aliases: tuple[str, ...]
    password: Password
    where: str  # "path:line" (or "path:row N") of its row, for later messages

    @property
    def domain(self) -> str:
        """The mail domain of the address (an A-label for IDNA domains)."""
        return self.address.rpartition("@")[2]

    @property
    def quota_text(self) -> str:
        """The quota as a Dovecot quota-rule size (``2G``), or ``unlimited``."""
        return "unlimited" if self.quota is None else format_quota(self.quota)


@dataclass(frozen=True)
class Roster:
    """The validated mailboxes of one roster file."""

    mailboxes: tuple[Mailbox, ...]
    source: str

    def __len__(self) -> int:
        return len(self.mailboxes)

    def __iter__(self) -> Iterator[Mailbox]:
        return iter(self.mailboxes)

    def domains(self) -> set[str]:
        """Every domain the roster receives mail for: its addresses' and aliases' domains."""
        return {address.rpartition("@")[2] for m in self.mailboxes for address in (m.address, *m.aliases)}


# ---------------------------------------------------------------- columns

FIELDS = ("address", "name", "quota", "protocol", "aliases", "password")
REQUIRED = ("address", "password")

SYNONYMS: dict[str, tuple[str, ...]] = {
    "address": ("address", "account", "email", "mail", "mailbox", "メールアドレス", "アカウント"),
    "name": ("name", "display_name", "表示名", "氏名"),
    "quota": ("quota", "容量"),
    "protocol": ("protocol", "プロトコル"),
    "aliases": ("aliases", "alias", "エイリアス"),
    "password": ("password", "パスワード"),
}


def _header_key(header: str) -> str:
    """Compare headers ignoring case, surrounding spaces and full-width forms."""
    key = unicodedata.normalize("NFKC", header).strip().lower()
    return re.sub(r"\s+", "_", key)


_FIELD_OF = {_header_key(name): field for field, names in SYNONYMS.items() for name in names}


def field_of_header(header: str) -> str | None:
    """The roster field a column header (or YAML key) stands for, None when unknown."""
    return _FIELD_OF.get(_header_key(header))


def _unknown_column(header: str, noun: str = "column") -> str:
    close = get_close_matches(_header_key(header), list(_FIELD_OF), n=1, cutoff=0.75)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    known = "; ".join(f"{f} ({', '.join(SYNONYMS[f][1:])})" if len(SYNONYMS[f]) > 1 else f for f in FIELDS)
    return f"unknown {noun} '{header}'{hint}: known {noun}s are {known}"


# ---------------------------------------------------------------- passwords

SUPPORTED_SCHEMES = ("SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2ID", "ARGON2I")

# Scheme names Dovecot knows. Only these are ever repeated back in a message:
# anything else inside {...} may be part of a password.
_DOVECOT_SCHEMES = frozenset(
    "ARGON2I ARGON2ID BLF-CRYPT CLEAR CLEARTEXT CRAM-MD5 CRYPT DES-CRYPT DIGEST-MD5 HMAC-MD5 "
    "LANMAN LDAP-MD5 MD5 MD5-CRYPT NTLM OTP PBKDF2 PLAIN PLAIN-MD4 PLAIN-MD5 PLAIN-TRUNC RPA "
    "SCRAM-SHA-1 SCRAM-SHA-256 SHA SHA1 SHA256 SHA256-CRYPT SHA512 SHA512-CRYPT SKEY SMD5 "
    "SSHA SSHA256 SSHA512".split()
)
_PLAIN_SCHEMES = frozenset({"PLAIN", "CLEAR", "CLEARTEXT", "PLAIN-TRUNC"})

# Crypt prefixes (as in /etc/shadow) of the supported schemes, longest first.
_CRYPT_IDS = (
    ("$argon2id$", "ARGON2ID"),
    ("$argon2i$", "ARGON2I"),
    ("$6$", "SHA512-CRYPT"),
    ("$5$", "SHA256-CRYPT"),
    ("$2y$", "BLF-CRYPT"),
    ("$2b$", "BLF-CRYPT"),
    ("$2a$", "BLF-CRYPT"),
)
# Recognisable crypt formats that are not supported (yescrypt is what current
# Debian writes to /etc/shadow; Dovecot cannot be relied on to verify it).
_OTHER_CRYPT_IDS = (
    ("$argon2d$", "Argon2d"),
    ("$1$", "MD5-CRYPT"),
    ("$y$", "yescrypt"),
    ("$gy$", "gost-yescrypt"),
    ("$7$", "scrypt"),
)

_HOW_TO_FIX = (
    "hash it with `doveadm pw -s SHA512-CRYPT`, write generate for a generated initial password, "
    "or convert the whole spreadsheet with `mailstack roster hash SRC DEST`"
)
_PLAINTEXT = f"password is in plain text, and the roster must never hold one: {_HOW_TO_FIX}"


class _PlaintextPassword(ValueError):
    """A password cell holds a plain-text password (the exception never holds it)."""


def parse_password(text: str) -> Password:
    """Read a roster password cell: a supported crypt hash, or ``generate[:N]``.

    A crypt string without its ``{SCHEME}`` prefix (as pasted from
    /etc/shadow) gets the right prefix; ``{CRYPT}`` becomes the specific
    scheme. Raises ValueError for a plain-text password, an unsupported
    scheme or a malformed hash. No message contains any part of ``text``.
    """
    text = str(text).strip()
    if not text:
        raise ValueError("password is empty: write a password hash or generate")
    generate = re.fullmatch(r"generate(?:\s*:\s*(.*))?", unicodedata.normalize("NFKC", text), re.I | re.S)
    if generate:
        return _generate(generate.group(1))
    prefixed = re.fullmatch(r"\{([^{}]*)\}(.*)", text, re.S)
    if not prefixed:
        return _crypt_hash(None, text)
    scheme = prefixed.group(1).strip().upper()
    value = prefixed.group(2)
    if scheme.split(".")[0] in _PLAIN_SCHEMES:
        raise _PlaintextPassword(f"password is a {{{scheme.split('.')[0]}}} plain-text password, "
                                 f"and the roster must never hold one: {_HOW_TO_FIX}")
    if scheme in SUPPORTED_SCHEMES or scheme == "CRYPT":
        return _crypt_hash(scheme, value)
    shown = f"the unsupported hash scheme {{{scheme}}}" if scheme in _DOVECOT_SCHEMES else "an unknown hash scheme"
    raise ValueError(_unsupported(shown))


def _unsupported(what: str, verb: str = "uses") -> str:
    return (
        f"password {verb} {what}: supported are {', '.join(SUPPORTED_SCHEMES)}; "
        f"hash the password again with `doveadm pw -s SHA512-CRYPT`, or write generate"
    )


def _generate(version: str | None) -> GeneratePassword:
    if version is None:
        return GeneratePassword()
    version = version.strip()
    if not version.isascii() or not version.isdigit() or int(version) < 1:
        raise ValueError("password generate:N needs a whole number N of 1 or more, e.g. generate:2")
    return GeneratePassword(int(version))


def _crypt_hash(scheme: str | None, value: str) -> PasswordHash:
    """Check a crypt string; ``scheme`` is the {SCHEME} given, None when there was none."""
    found = next((name for ident, name in _CRYPT_IDS if value.startswith(ident)), None)
    if found is None:
        other = next((name for ident, name in _OTHER_CRYPT_IDS if value.startswith(ident)), None)
        if other:
            raise ValueError(_unsupported(f"an unsupported {other} hash", verb="is"))
        if scheme is None:
            raise _PlaintextPassword(_PLAINTEXT)
        if scheme == "CRYPT":
            raise ValueError(_unsupported("{CRYPT} with an unsupported hash type"))
        raise ValueError(f"password has the {{{scheme}}} prefix but no {scheme} hash after it: "
                         f"it looks damaged; copy the whole hash")
    if scheme not in (None, "CRYPT", found):
        raise ValueError(f"password has the {{{scheme}}} prefix but holds a {found} hash: "
                         f"write {{{found}}} or leave the prefix out")
    problem = _HASH_CHECKS[found](value, found)
    if problem:
        raise ValueError(f"password: the {found} hash {problem}")
    return PasswordHash(found, value)


_CRYPT64 = re.compile(r"[./0-9A-Za-z]*")
_PHC64 = re.compile(r"[A-Za-z0-9+/]*")
_TRUNCATED = "looks truncated: copy the whole hash"
_DAMAGED = "looks damaged: copy the whole hash again"


def _length(part: str, expected: int, what: str = "hash part") -> str | None:
    if len(part) < expected:
        return f"{_TRUNCATED} (its {what} has {len(part)} characters, not {expected})"
    if len(part) > expected:
        return f"{_DAMAGED} (its {what} has {len(part)} characters, not {expected})"
    return None


def _check_sha_crypt(value: str, scheme: str) -> str | None:
    """``$6$[rounds=N$]salt$hash`` (SHA512-CRYPT, 86 chars) or ``$5$`` (SHA256-CRYPT, 43)."""
    expected = 86 if scheme == "SHA512-CRYPT" else 43
    parts = value[3:].split("$")
    if parts[0].startswith("rounds="):
        if not re.fullmatch(r"rounds=[0-9]{1,9}", parts.pop(0)):
            return f"{_DAMAGED} (its rounds= is not a number)"
    if len(parts) < 2:
        return f"{_TRUNCATED} (it ends after the salt)"
    if len(parts) > 2:
        return f"{_DAMAGED} (it has too many $-separated parts)"
    salt, digest = parts
    if not 1 <= len(salt) <= 16 or not _CRYPT64.fullmatch(salt):
        return f"{_DAMAGED} (its salt is not 1 to 16 of the characters ./0-9A-Za-z)"
    if not _CRYPT64.fullmatch(digest):
        return f"{_DAMAGED} (its hash part has characters other than ./0-9A-Za-z)"
    return _length(digest, expected)


def _check_blf_crypt(value: str, scheme: str) -> str | None:
    """``$2y$NN$`` + 22 characters of salt and 31 of hash."""
    match = re.fullmatch(r"\$2[aby]\$([0-9]{2})\$(.*)", value, re.S)
    if not match:
        return f"{_DAMAGED} (it does not start like $2y$10$)"
    if not 4 <= int(match.group(1)) <= 31:
        return f"{_DAMAGED} (its cost {match.group(1)} is not 04 to 31)"
    if not _CRYPT64.fullmatch(match.group(2)):
        return f"{_DAMAGED} (it has characters other than ./0-9A-Za-z after the cost)"
    return _length(match.group(2), 53, "salt-and-hash part")


def _check_argon2(value: str, scheme: str) -> str | None:
    """The PHC string ``$argon2id$v=19$m=M,t=T,p=P$salt$hash`` (base64 without padding)."""
    parts = value.split("$")[2:]
    if parts and re.fullmatch(r"v=[0-9]+", parts[0]):
        parts.pop(0)
    if not parts or not re.fullmatch(r"m=[0-9]+,t=[0-9]+,p=[0-9]+", parts[0]):
        return f"{_DAMAGED} (it has no m=...,t=...,p=... parameters)"
    if len(parts) < 3:
        return f"{_TRUNCATED} (it ends before the hash part)"
    if len(parts) > 3:
        return f"{_DAMAGED} (it has too many $-separated parts)"
    salt, digest = parts[1:]
    if not digest:
        return f"{_TRUNCATED} (it ends before the hash part)"
    if not salt or not _PHC64.fullmatch(salt) or not _PHC64.fullmatch(digest):
        return f"{_DAMAGED} (its salt or hash is not base64)"
    # 8-byte salts and 16-byte hashes are the smallest libsodium (Dovecot's argon2) makes.
    if len(salt) < 11:
        return f"{_TRUNCATED} (its salt has {len(salt)} characters, at least 11 expected)"
    if len(digest) < 22:
        return f"{_TRUNCATED} (its hash part has {len(digest)} characters, at least 22 expected)"
    return None


_HASH_CHECKS = {
    "SHA512-CRYPT": _check_sha_crypt,
    "SHA256-CRYPT": _check_sha_crypt,
    "BLF-CRYPT": _check_blf_crypt,
    "ARGON2ID": _check_argon2,
    "ARGON2I": _check_argon2,
}


def _plaintext_of(text: str) -> str | None:
    """The password in a plain-text cell, without a {PLAIN} or {CLEARTEXT} prefix.

    None for an encoded plain-text form such as {PLAIN-TRUNC} or {PLAIN.b64},
    which would be hashed wrongly as it stands.
    """
    prefixed = re.fullmatch(r"\s*\{([^{}]*)\}(.*)", text, re.S)
    if not prefixed:
        return text
    if prefixed.group(1).strip().upper() in ("PLAIN", "CLEAR", "CLEARTEXT"):
        return prefixed.group(2)
    return None


def _plaintext_problem(password: str) -> str | None:
    """Why a plain-text password cannot be hashed as it is, None when it can."""
    if not password:
        return "password is empty: write the password, a password hash or generate"
    if password != password.strip():
        return ("password has spaces at the start or end, which are most likely a mistake: remove them, "
                "or hash it yourself with `doveadm pw -s SHA512-CRYPT` if they are meant")
    if any(unicodedata.category(c).startswith("C") for c in password):
        return "password has a control character such as a line break or tab: fix the cell"
    return None


# ---------------------------------------------------------------- addresses

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
def parse_address(text: str, *, what: str = "address", example_domain: str = "example.com") -> str:
    """Validate and normalise an addr-spec ``local@domain``: lower-case, A-label domain.

    Raises ValueError with a message naming ``what`` (``address`` or
    ``alias``) and the value; an address without ``@`` gets a suggestion
    using ``example_domain``.
    """
    shown = str(text).strip()
    # NFKC maps full-width characters (＠, ｔａｒｏ) that Japanese input methods produce.
    address = unicodedata.normalize("NFKC", shown).lower()
    if not address:
        raise ValueError(f"{what} is empty")
    if "@" not in address:
        local = address if _LOCAL.fullmatch(address) else "user"
        raise ValueError(f"{what} '{shown}' has no @domain: write the full address, e.g. {local}@{example_domain}")
    local, _, domain = address.rpartition("@")
    if "@" in local:
        raise ValueError(f"{what} '{shown}' has more than one @")
    if not local:
        raise ValueError(f"{what} '{shown}' has nothing before the @")
    if not domain:
        raise ValueError(f"{what} '{shown}' has nothing after the @")
    if not local.isascii():
        raise ValueError(f"{what} '{shown}': the part before @ must be ASCII letters, digits or .!#$%&'*+/=?^_`{{|}}~-")
    if not _LOCAL.fullmatch(local):
        bad = next((c for c in local if not re.fullmatch(_ATOM, c) and c != "."), None)
        reason = (f"the part before @ has the character {bad!r}, which an address cannot have" if bad
                  else "the part before @ must not start or end with a dot or have two dots in a row")
        raise ValueError(f"{what} '{shown}': {reason}")
    if len(local) > 64:
        raise ValueError(f"{what} '{shown}': the part before @ is longer than 64 characters")
    try:
        domain = normalise_domain(domain)
    except ValueError as exc:
        raise ValueError(f"{what} '{shown}': the domain {exc}") from None
    address = f"{local}@{domain}"
    if len(address) > 254:
        raise ValueError(f"{what} '{shown}' is longer than 254 characters")
    return address


def _domain_shown(domain: str) -> str:
    """An A-label domain with its Unicode form, for messages: ``xn--r8jz45g.jp (例え.jp)``."""
    try:
        unicode = domain.encode("ascii").decode("idna")
    except UnicodeError:
        return domain
    return domain if unicode == domain else f"{domain} ({unicode})"


def _allowed_domains(domains: Iterable[str] | None) -> tuple[str, ...] | None:
    if domains is None:
        return None
    allowed = []
    for domain in domains:
        try:
            allowed.append(normalise_domain(domain.rstrip(".")))
        except ValueError:
            allowed.append(domain.strip().lower())  # already validated by the settings
    return tuple(dict.fromkeys(allowed))


# ---------------------------------------------------------------- rows

Cell = str | tuple[str, ...]


@dataclass(frozen=True)
class _Column:
    header: str  # as written in the file
    field: str | None  # None: unknown column


@dataclass(frozen=True, repr=False)
class _Row:
    """One non-blank row: its position and its cells (which may hold a plain-text password)."""

    where: str
    cells: tuple[tuple[_Column, Cell], ...]
    # Fields whose value could not be read as text (already reported): not checked again.
    unreadable: frozenset[str] = frozenset()

    def get(self, field: str) -> Cell | None:
        return next((value for column, value in self.cells if column.field == field), None)

    def __repr__(self) -> str:
        # Never show cell values: in hash_roster's input they include passwords.
        return f"_Row({self.where!r})"


@dataclass
class _Table:
    """A roster file read into rows of text, before validation."""

    source: str
    rows: list[_Row]
    problems: list[Problem]
    # Fields that have a column (CSV/XLSX); None when each row names its own keys (YAML).
    columns: frozenset[str] | None
    headers: dict[str, str]  # field -> header naming it in the file, in file order
    default_quota: tuple[str, str] | None = None  # (text, where) from a YAML file


def _is_blank(cell: Cell) -> bool:
    return not any(part.strip() for part in ((cell,) if isinstance(cell, str) else cell))


def _split_aliases(cell: Cell) -> list[str]:
    parts = (cell,) if isinstance(cell, str) else cell
    return [a for part in parts for a in re.split(r"[\s,;、，；]+", part) if a]


def _single(cell: Cell | None, field: str) -> tuple[str, str | None]:
    """The text of a one-value field, or the problem of a list given for it."""
    if cell is None:
        return "", None
    if isinstance(cell, tuple):
        return "", f"{field} must be a single value, not a list"
    return cell.strip(), None


@dataclass(frozen=True)
class _Rules:
    """What row validation depends on besides the row."""

    columns: frozenset[str] | None
    default_quota: int | None
    domains: tuple[str, ...] | None
    example_domain: str
    plaintext_ok: bool  # hash_roster: plain-text passwords are its input


@dataclass
class _Checked:
    """A row's validated values (None where its field has a problem)."""

    row: _Row
    address: str | None = None
    name: str = ""
    quota: int | None = None
    protocol: str = "imap"
    aliases: tuple[str, ...] = ()
    password: Password | None = None
    plaintext: str | None = None  # hash_roster only; never reaches a Mailbox

    def __repr__(self) -> str:
        return f"_Checked({self.row.where!r}, {self.address!r})"


def _check_row(row: _Row, rules: _Rules) -> tuple[_Checked, list[str]]:
    """Validate one row on its own; returns its values and one message per bad field."""
    checked = _Checked(row)
    messages: list[str] = []

    def required(field: str) -> str | None:
        if field in row.unreadable:
            return None
        text, problem = _single(row.get(field), field)
        if problem:
            messages.append(problem)
            return None
        if text:
            return text
        hint = ": write a password hash or generate" if field == "password" else ""
        if row.get(field) is not None or (rules.columns is not None and field in rules.columns):
            messages.append(f"{field} is empty{hint}")
        elif rules.columns is None:
            messages.append(f"{field} is missing{hint}")
        # else: the whole column is missing, reported once for the file
        return None

    address = required("address")
    if address is not None:
        try:
            checked.address = parse_address(address, example_domain=rules.example_domain)
        except ValueError as exc:
            messages.append(str(exc))
        else:
            outside = _outside(checked.address, "address", rules.domains)
            if outside:
                messages.append(outside)

    name, problem = _single(row.get("name"), "name")
    if problem:
        messages.append(problem)
    checked.name = name

    quota, problem = _single(row.get("quota"), "quota")
    if problem:
        messages.append(problem)
    elif quota:
        try:
            checked.quota = parse_quota(quota)
        except ValueError as exc:
            messages.append(str(exc))
    else:
        checked.quota = rules.default_quota

    protocol, problem = _single(row.get("protocol"), "protocol")
    if problem:
        messages.append(problem)
    elif protocol:
        normal = unicodedata.normalize("NFKC", protocol).lower()
        if normal in ("imap", "pop", "pop3"):
            checked.protocol = "imap" if normal == "imap" else "pop"
        else:
            messages.append(f"protocol '{protocol}' is not imap or pop")

    aliases: list[str] = []
    for text in _split_aliases(row.get("aliases") or ()):
        try:
            alias = parse_address(text, what="alias", example_domain=rules.example_domain)
        except ValueError as exc:
            messages.append(str(exc))
            continue
        outside = _outside(alias, "alias", rules.domains)
        if outside:
            messages.append(outside)
        elif alias in aliases:
            messages.append(f"alias '{alias}' is listed twice")
        else:
            aliases.append(alias)
    checked.aliases = tuple(aliases)

    password = row.get("password")
    if "password" in row.unreadable:
        pass
    elif isinstance(password, tuple):
        messages.append("password must be a single value, not a list")
    elif password is None or not password.strip():
        required("password")
    else:
        try:
            checked.password = parse_password(password)
        except _PlaintextPassword as exc:
            if not rules.plaintext_ok:
                messages.append(str(exc))
            else:
                plaintext = _plaintext_of(password)
                problem = (_plaintext_problem(plaintext) if plaintext is not None
                           else "password is an encoded plain-text form that cannot be hashed as it is: "
                                "write the password itself")
                if problem:
                    messages.append(problem)
                else:
                    checked.plaintext = plaintext
        except ValueError as exc:
            messages.append(str(exc))
    return checked, messages


def _outside(address: str, what: str, domains: tuple[str, ...] | None) -> str | None:
    domain = address.rpartition("@")[2]
    if domains is None or domain in domains:
        return None
    allowed = ", ".join(_domain_shown(d) for d in domains)
    return f"{what} '{address}' is not in the stack's domains: {allowed}"


def _check_rows(rows: list[_Row], rules: _Rules) -> tuple[list[_Checked], list[Problem]]:
    """Validate every row, then what rows must agree on: no address or alias used twice."""
    checked: list[_Checked] = []
    problems: list[Problem] = []
    for row in rows:
        values, messages = _check_row(row, rules)
        checked.append(values)
        problems += [Problem(row.where, message) for message in messages]

    owner: dict[str, str] = {}  # address -> where
    for values in checked:
        if values.address is None:
            continue
        first = owner.setdefault(values.address, values.row.where)
        if first != values.row.where:
            problems.append(Problem(values.row.where, f"address '{values.address}' is listed twice: first at {first}"))
            values.address = None
    alias_owner: dict[str, tuple[str, str]] = {}  # alias -> (its mailbox, where)
    for values in checked:
        kept = []
        for alias in values.aliases:
            if alias in owner:
                where = owner[alias]
                message = ("is the mailbox's own address" if where == values.row.where
                           else f"is also the address of the mailbox at {where}")
                problems.append(Problem(values.row.where, f"alias '{alias}' {message}: an address cannot also be an alias"))
            elif alias in alias_owner:
                mailbox, where = alias_owner[alias]
                message = f"alias '{alias}' is listed twice: it is already an alias of {mailbox} at {where}"
                problems.append(Problem(values.row.where, message))
            else:
                alias_owner[alias] = (values.address or "another mailbox", values.row.where)
                kept.append(alias)
        values.aliases = tuple(kept)
    return checked, problems


def _example_domain(rows: list[_Row], domains: tuple[str, ...] | None) -> str:
    """The domain to suggest for an address written without one."""
    if domains:
        return domains[0]
    found = Counter()
    for row in rows:
        cell = row.get("address")
        if isinstance(cell, str) and "@" in cell:
            found[cell.strip().rpartition("@")[2].lower()] += 1
    return found.most_common(1)[0][0] if found else "example.com"


def _validate(
    table: _Table,
    *,
    domains: Iterable[str] | None,
    default_quota: str,
    plaintext_ok: bool,
) -> tuple[list[_Checked], list[Problem]]:
    """All problems of a read table, and its rows' values."""
    problems = list(table.problems)
    quota_text, quota_where = table.default_quota or (default_quota, "mailstack:default_quota")
    try:
        default = parse_quota(quota_text)
    except ValueError as exc:
        default = None
        problems.append(Problem(quota_where, f"default_quota: {exc}"))
    allowed = _allowed_domains(domains)
    rules = _Rules(
        columns=table.columns,
        default_quota=default,
        domains=allowed,
        example_domain=_example_domain(table.rows, allowed),
        plaintext_ok=plaintext_ok,
    )
    checked, row_problems = _check_rows(table.rows, rules)
    problems += row_problems
    if not table.rows and not table.problems:
        problems.append(Problem(table.source, "the roster has no mailboxes"))
    # In file order, so that a long report reads top to bottom with the spreadsheet.
    return checked, sorted(problems, key=lambda p: _position(p.where))


def _position(where: str) -> int:
    """The line (or row) number at the end of a ``where``; 0 for the whole file."""
    match = re.search(r":(?:row )?([0-9]+)$", where)
    return int(match.group(1)) if match else 0


# ---------------------------------------------------------------- reading

_EXTENSIONS = (".csv", ".yaml", ".yml", ".xlsx")


class _Unreadable(Exception):
    """The file cannot be read at all: one problem, on the file or the line given."""

    def __init__(self, message: str, where: str | None = None):
        super().__init__(message)
        self.where = where


def _read_table(path: Path) -> _Table:
    """Read any roster format into rows of text cells; problems of the file's shape included."""
    shown = str(path)
    try:
        suffix = path.suffix.lower()
        if suffix not in _EXTENSIONS:
            hint = " (save it from Excel as .xlsx)" if suffix in (".xls", ".ods", ".numbers") else ""
            raise _Unreadable(f"unsupported file type '{path.suffix or '(none)'}'{hint}: use .csv, .yaml, .yml or .xlsx")
        if suffix == ".xlsx":
            return _read_xlsx(path, shown)
        text = _decode(_read_bytes(path), suffix)
        return _read_yaml(text, shown) if suffix in (".yaml", ".yml") else _read_csv(text, shown)
    except _Unreadable as exc:
        return _Table(shown, [], [Problem(exc.where or shown, str(exc))], None, {})


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _Unreadable("no such file") from None
    except IsADirectoryError:
        raise _Unreadable("is a directory, not a roster file") from None
    except PermissionError:
        raise _Unreadable("cannot be read: permission denied") from None
    except OSError as exc:
        raise _Unreadable(f"cannot be read: {exc.strerror}") from None


def _decode(data: bytes, suffix: str) -> str:
    """UTF-8 (with or without Excel's BOM), else cp932 as Japanese Excel writes CSV."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp932")
    except UnicodeDecodeError:
        # from None: the decode error holds the file's bytes, passwords included.
        raise _Unreadable(f"is neither UTF-8 nor Shift_JIS (cp932) text: save it as {suffix[1:].upper()} UTF-8") from None


def _columns(headers: list[str], where: str) -> tuple[list[_Column], list[Problem]]:
    """Map header cells to fields; unknown, duplicate and missing columns are problems."""
    columns, problems = [], []
    seen: dict[str, str] = {}
    for header in headers:
        header = header.strip()
        field = field_of_header(header) if header else None
        if header and field is None:
            problems.append(Problem(where, _unknown_column(header)))
        elif field in seen:
            problems.append(Problem(where, f"columns '{seen[field]}' and '{header}' both give the {field}: keep one"))
            field = None
        elif field:
            seen[field] = header
        columns.append(_Column(header, field))
    for field in REQUIRED:
        if field not in seen:
            others = ", ".join(SYNONYMS[field][1:])
            problems.append(Problem(where, f"missing required column '{field}' (or one of: {others})"))
    return columns, problems


def _grid_table(shown: str, grid: Iterable[tuple[str, list[str]]], empty: str) -> _Table:
    """A table from a header row and data rows of text (CSV and XLSX)."""
    grid = iter(grid)
    first = next(grid, None)
    if first is None or not any(c.strip() for c in first[1]):
        where = first[0] if first else shown
        return _Table(shown, [], [Problem(where, empty)], None, {})
    columns, problems = _columns(first[1], first[0])
    rows = []
    for where, cells in grid:
        if all(not c.strip() for c in cells):
            continue
        for index, cell in enumerate(cells):
            if cell.strip() and (index >= len(columns) or not columns[index].header):
                problems.append(Problem(where, f"has a value in column {index + 1}, which has no header"))
        named = tuple((columns[i], cell) for i, cell in enumerate(cells) if i < len(columns) and columns[i].field)
        rows.append(_Row(where, named))
    headers = {c.field: c.header for c in columns if c.field}
    return _Table(shown, rows, problems, frozenset(headers), headers)


_EMPTY_GRID = "the file is empty: its first row must be the header, e.g. address,password,quota"


def _read_csv(text: str, shown: str) -> _Table:
    def grid() -> Iterator[tuple[str, list[str]]]:
        # strict: an unclosed quote is an error, not a cell swallowing the rest of the file.
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        start = 1
        try:
            for cells in reader:
                # line_num is the record's last line; a quoted field may span lines.
                yield f"{shown}:{start}", cells
                start = reader.line_num + 1
        except csv.Error as exc:
            reason = "a quoted field is never closed" if "end of data" in str(exc) else str(exc)
            raise _Unreadable(f"not valid CSV: {reason}", f"{shown}:{start}") from None

    return _grid_table(shown, grid(), _EMPTY_GRID)


def _cell_text(value: Any) -> str:
    """An XLSX cell as the text the operator sees."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _read_xlsx(path: Path, shown: str) -> _Table:
    import openpyxl  # only XLSX rosters need it

    if not path.exists():
        raise _Unreadable("no such file")
    if path.is_dir():
        raise _Unreadable("is a directory, not a roster file")
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except PermissionError:
        raise _Unreadable("cannot be read: permission denied") from None
    except Exception as exc:  # openpyxl raises many types for a damaged or non-XLSX file
        raise _Unreadable(f"cannot be read as an .xlsx workbook ({type(exc).__name__}): save it again from Excel") from None
    try:
        sheet = workbook.worksheets[0]
        # Some writers record wrong dimensions; read what is there instead.
        sheet.reset_dimensions()
        grid = [
            (f"{shown}:row {number}", [_cell_text(v) for v in values])
            for number, values in enumerate(sheet.iter_rows(values_only=True), start=1)
        ]
    except Exception as exc:
        raise _Unreadable(f"cannot be read as an .xlsx workbook ({type(exc).__name__}): save it again from Excel") from None
    finally:
        workbook.close()  # read-only mode keeps the file open until closed
    return _grid_table(shown, grid, _EMPTY_GRID.replace("address,password,quota", "address | password | quota"))


_NULL_TAG = "tag:yaml.org,2002:null"
_YAML_KEYS = ("mailboxes", "default_quota")


def _line(shown: str, node: yaml.Node) -> str:
    return f"{shown}:{node.start_mark.line + 1}"


def _yaml_cell(node: yaml.Node) -> Cell | None:
    """A value as written (never YAML's typed reading: 0123 stays 0123, yes stays yes)."""
    if isinstance(node, yaml.ScalarNode):
        return "" if node.tag == _NULL_TAG else node.value
    if isinstance(node, yaml.SequenceNode) and all(isinstance(n, yaml.ScalarNode) for n in node.value):
        return tuple(_yaml_cell(n) or "" for n in node.value)
    return None


def _read_yaml(text: str, shown: str) -> _Table:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{shown}:{mark.line + 1}" if mark else None
        # Only the problem, not str(exc): that quotes the line, which may hold a password.
        raise _Unreadable(f"not valid YAML: {exc.problem or exc.context}", where) from None
    except yaml.YAMLError:
        raise _Unreadable("not valid YAML") from None
    problems: list[Problem] = []
    default_quota = None
    items = root
    if isinstance(root, yaml.MappingNode):
        items = None
        for key, value in root.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name == "mailboxes":
                items = value
            elif name == "default_quota" and isinstance(_yaml_cell(value), str):
                default_quota = (_yaml_cell(value), _line(shown, value))
            elif name == "default_quota":
                problems.append(Problem(_line(shown, value), "default_quota must be a size such as 1G"))
            else:
                problems.append(Problem(_line(shown, key), f"unknown key '{name}': known keys are {', '.join(_YAML_KEYS)}"))
        if items is None:
            message = "no 'mailboxes:' list: write mailboxes: followed by one '- address: ...' item per mailbox"
            problems.append(Problem(shown, message))
            return _Table(shown, [], problems, None, {}, default_quota)
    if root is None or (isinstance(items, yaml.ScalarNode) and items.tag == _NULL_TAG):
        return _Table(shown, [], problems, None, {}, default_quota)
    if not isinstance(items, yaml.SequenceNode):
        message = "expected a list of mailboxes ('- address: ...' items), or mailboxes: holding that list"
        problems.append(Problem(_line(shown, items), message))
        return _Table(shown, [], problems, None, {}, default_quota)
    rows, headers = [], {}
    for item in items.value:
        where = _line(shown, item)
        if isinstance(item, yaml.ScalarNode) and item.tag == _NULL_TAG:
            continue
        if not isinstance(item, yaml.MappingNode):
            problems.append(Problem(where, "a mailbox must be a mapping such as '- address: taro@example.jp'"))
            continue
        cells = []
        unreadable = set()
        seen: dict[str, str] = {}
        for key, value in item.value:
            header = key.value if isinstance(key, yaml.ScalarNode) else ""
            field = field_of_header(header) if header else None
            if field is None:
                problems.append(Problem(where, _unknown_column(header or "?", "key")))
                continue
            if field in seen:
                problems.append(Problem(where, f"keys '{seen[field]}' and '{header}' both give the {field}: keep one"))
                continue
            seen[field] = header
            cell = _yaml_cell(value)
            if cell is None:
                kind = "text or a list of addresses" if field == "aliases" else "text"
                got = "a mapping" if isinstance(value, yaml.MappingNode) else "a list holding mappings or lists"
                problems.append(Problem(where, f"{field} must be {kind}, not {got}"))
                unreadable.add(field)
                continue
            headers.setdefault(field, header)
            cells.append((_Column(header, field), cell))
        if unreadable or (cells and not all(_is_blank(cell) for _, cell in cells)):
            rows.append(_Row(where, tuple(cells), frozenset(unreadable)))
    return _Table(shown, rows, problems, None, headers, default_quota)


# ---------------------------------------------------------------- public API


def _check(path: Path, domains: Iterable[str] | None, default_quota: str) -> tuple[Roster | None, list[Problem]]:
    table = _read_table(path)
    checked, problems = _validate(table, domains=domains, default_quota=default_quota, plaintext_ok=False)
    if problems:
        return None, problems
    mailboxes = tuple(
        Mailbox(c.address, c.name, c.quota, c.protocol, c.aliases, c.password, c.row.where)  # type: ignore[arg-type]
        for c in checked
    )
    return Roster(mailboxes, str(path)), []


def check_roster(
    path: str | os.PathLike[str],
    *,
    domains: Iterable[str] | None = None,
    default_quota: str = "1G",
) -> list[Problem]:
    """Every problem of the roster at ``path``; an empty list when it is fine.

    Same validation as :func:`load_roster`.
    """
    return _check(Path(path), domains, default_quota)[1]


def load_roster(
    path: str | os.PathLike[str],
    *,
    domains: Iterable[str] | None = None,
    default_quota: str = "1G",
) -> Roster:
    """Read and validate the roster at ``path`` (.csv, .yaml/.yml or .xlsx).

    ``domains`` restricts addresses and aliases to those mail domains;
    ``default_quota`` applies to rows without a quota (a YAML roster's own
    ``default_quota:`` wins). Raises :class:`InputError` listing every
    problem of every row, each at ``path:line`` (``path:row N`` for XLSX).
    """
    roster, problems = _check(Path(path), domains, default_quota)
    if problems or roster is None:
        raise InputError(f"roster {path}", problems)
    return roster


# ---------------------------------------------------------------- hashing

_WRITABLE = (".csv", ".yaml", ".yml")
_DEST_EXISTS = "already exists: choose a new file name, or allow overwriting it"


def _hasher(scheme: str, rounds: int):
    with warnings.catch_warnings():
        # passlib imports the stdlib crypt module (deprecated in 3.11) to use libc's fast crypt.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from passlib.hash import sha256_crypt, sha512_crypt
    handlers = {"SHA512-CRYPT": sha512_crypt, "SHA256-CRYPT": sha256_crypt}
    if scheme not in handlers:
        raise ValueError(f"hash_roster hashes with {' or '.join(handlers)}, not {scheme}")
    handler = handlers[scheme].using(rounds=rounds)
    return lambda password: f"{{{scheme}}}{handler.hash(password)}"


def _dest_problems(src: Path, dest: Path, overwrite: bool) -> list[Problem]:
    shown = str(dest)
    if dest.suffix.lower() not in _WRITABLE:
        return [Problem(shown, f"cannot write '{dest.suffix or '(none)'}' files: name it .csv, .yaml or .yml")]
    same = src.resolve() == dest.resolve()
    if not same and src.exists() and dest.exists():
        same = os.path.samefile(src, dest)
    if same:
        return [Problem(shown, "is the source file: write the hashed roster to a new file, then delete the source")]
    if not dest.parent.is_dir():
        return [Problem(shown, f"its directory {dest.parent} does not exist")]
    if dest.exists() and not overwrite:
        return [Problem(shown, _DEST_EXISTS)]
    return []


def _output_cells(checked: _Checked, hashed: str | None) -> dict[str, Cell]:
    """A row's cells by field as written, the password replaced by its hash."""
    out = {}
    for column, value in checked.row.cells:
        if column.field == "password" and isinstance(value, str):
            value = hashed if hashed is not None else value.strip()
        out[column.field] = value
    return out


def _render_csv(headers: dict[str, str], rows: list[dict[str, Cell]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers.values())
    for cells in rows:
        writer.writerow([_joined(cells.get(field, "")) for field in headers])
    return out.getvalue()


def _joined(cell: Cell) -> str:
    return " ".join(cell) if isinstance(cell, tuple) else cell


def _render_yaml(headers: dict[str, str], rows: list[dict[str, Cell]], default_quota: str | None) -> str:
    mailboxes = [
        {header: (list(cells[f]) if isinstance(cells[f], tuple) else cells[f])
         for f, header in headers.items() if f in cells and not _is_blank(cells[f])}
        for cells in rows
    ]
    document: dict[str, Any] = {}
    if default_quota is not None:
        document["default_quota"] = default_quota
    document["mailboxes"] = mailboxes
    # A wide line keeps each hash on one line.
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False, width=4096)


def _write_private(dest: Path, text: str, *, encoding: str, overwrite: bool) -> None:
    """Write ``dest`` with mode 0600, atomically: readers see no file, or the old one, or the whole new one.

    Raises FileExistsError when ``dest`` appeared since it was checked and
    ``overwrite`` is false.
    """
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, dest)
            return
        try:
            # link() fails if dest appeared meanwhile, where replace() would clobber it.
            os.link(tmp, dest)
        except FileExistsError:
            raise
        except OSError:
            os.replace(tmp, dest)  # no hard links here: the earlier exists check has to do
        else:
            os.unlink(tmp)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def hash_roster(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    scheme: str = "SHA512-CRYPT",
    rounds: int = 5000,
    overwrite: bool = False,
    domains: Iterable[str] | None = None,
    default_quota: str = "1G",
) -> int:
    """Write a copy of a plain-text-password spreadsheet with every password hashed.

    ``src`` is a roster (.csv, .xlsx, .yaml) whose password column holds
    plain-text passwords; cells already holding a supported hash or
    ``generate`` are kept. ``dest`` (.csv, or .yaml/.yml) is written
    atomically with mode 0600, with the source's columns and values and
    ``{SHA512-CRYPT}`` hashes (rounds=5000, Dovecot's default) in place of
    the passwords. Everything but the passwords is validated as by
    :func:`load_roster`; on any problem nothing is written and
    :class:`InputError` lists them all. Refuses to write over ``src``, and
    over an existing ``dest`` unless ``overwrite``. Returns how many
    passwords were hashed.
    """
    src_path, dest_path = Path(src), Path(dest)
    hasher = _hasher(scheme, rounds)
    table = _read_table(src_path)
    checked, problems = _validate(table, domains=domains, default_quota=default_quota, plaintext_ok=True)
    problems += _dest_problems(src_path, dest_path, overwrite)
    if problems:
        raise InputError(f"roster {src}", problems)
    rows, count = [], 0
    for values in checked:
        hashed = None
        if values.plaintext is not None:
            hashed = hasher(values.plaintext)
            count += 1
        rows.append(_output_cells(values, hashed))
    if dest_path.suffix.lower() == ".csv":
        # With a BOM, because Excel (the operators' editor) reads BOM-less CSV as cp932 in Japan.
        text, encoding = _render_csv(table.headers, rows), "utf-8-sig"
    else:
        default_quota_text = table.default_quota[0] if table.default_quota else None
        text, encoding = _render_yaml(table.headers, rows, default_quota_text), "utf-8"
    try:
        _write_private(dest_path, text, encoding=encoding, overwrite=overwrite)
    except FileExistsError:
        raise InputError(f"roster {src}", [Problem(str(dest_path), _DEST_EXISTS)]) from None
    return count
