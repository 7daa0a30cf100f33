"""The accounts file: which source mailbox goes to which target mailbox, with both passwords.

A CSV with the header ``source_user,source_password,target_user,target_password``.
It holds plaintext passwords: keep it out of git and delete it after the
migration. Problems name the file and line, never a password.

Commands that only read the old server (``status``, ``backup``) take the
same file with ``source_only``: the target columns may then be empty, and a
file of just ``source_user,source_password`` is accepted.

``mailstack sync --shard K/N`` splits the accounts between N machines by a
digest of the source user (:func:`shard_of`): every account falls in exactly
one shard, the same one on every machine.
"""

from __future__ import annotations

import csv
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from mailstack.inputs import MAX_CELL_CHARS, file_problem
from mailstack.problems import InputError, Problem

COLUMNS = ("source_user", "source_password", "target_user", "target_password")
SOURCE_COLUMNS = COLUMNS[:2]


@dataclass(frozen=True)
class Account:
    """One mailbox to sync; passwords never appear in its repr."""

    source_user: str
    source_password: str = field(repr=False)
    target_user: str
    target_password: str = field(repr=False)
    where: str = ""


def read_accounts(path: Path, *, source_only: bool = False) -> tuple[list[Account], list[Problem]]:
    """Valid rows, and one problem per bad row (file:line, what to fix).

    A file that cannot be read at all (missing, wrong header) raises
    :class:`InputError`: no row can be trusted then.
    """
    too_big = file_problem(path, "an accounts file")
    if too_big:
        raise InputError(f"accounts file {path}", [Problem(str(path), too_big)])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else (exc.strerror or str(exc))
        raise InputError(f"accounts file {path}", [Problem(str(path), f"cannot read it: {reason}")]) from None
    return parse_accounts(text, str(path), source_only=source_only)


def parse_accounts(text: str, source: str, *, source_only: bool = False) -> tuple[list[Account], list[Problem]]:
    """Parse accounts CSV text; see :func:`read_accounts`."""
    reader = csv.reader(text.splitlines())
    try:
        return _parse(reader, source, source_only)
    except csv.Error as exc:
        # A field past csv's own limit (128 KiB), say: what follows cannot be trusted. No cell is quoted (passwords).
        reason = "a field is far too long" if "field limit" in str(exc) else str(exc)
        raise InputError(f"accounts file {source}", [Problem(
            f"{source}:{reader.line_num}", f"not valid CSV: {reason} (a field may hold at most {MAX_CELL_CHARS} "
                                           f"characters)")]) from None


def _parse(reader, source: str, source_only: bool) -> tuple[list[Account], list[Problem]]:
    header = next(reader, None)
    if header is None:
        raise InputError(f"accounts file {source}", [Problem(source, f"empty; the first line must be {','.join(COLUMNS)}")])
    found = tuple(h.strip().lower() for h in header)
    if found != COLUMNS and not (source_only and found == SOURCE_COLUMNS):
        raise InputError(f"accounts file {source}", [Problem(
            f"{source}:1", f"the header must be exactly {','.join(COLUMNS)} (found {len(header)} columns)")])
    columns = found
    accounts: list[Account] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for row in reader:
        where = f"{source}:{reader.line_num}"
        if not row or (len(row) == 1 and not row[0].strip()) or row[0].lstrip().startswith("#"):
            continue
        if len(row) != len(columns):
            hint = ": quote a password that holds a comma" if len(row) > len(columns) else ""
            problems.append(Problem(where, f"expected {len(columns)} fields, found {len(row)}{hint}"))
            continue
        too_long = next((n for n, cell in zip(columns, row) if len(cell) > MAX_CELL_CHARS), None)
        if too_long:
            problems.append(Problem(where, f"{too_long} is longer than {MAX_CELL_CHARS} characters"))
            continue
        row = row + ["", ""] if len(row) == 2 else row
        source_user, source_password, target_user, target_password = (row[0].strip(), row[1], row[2].strip(), row[3])
        required = SOURCE_COLUMNS if source_only else COLUMNS
        empty = [name for name, value in zip(COLUMNS, (source_user, source_password, target_user, target_password))
                 if name in required and not value]
        if empty:
            problems.append(Problem(where, f"{', '.join(empty)} empty"))
            continue
        column, user = ("source_user", source_user) if source_only else ("target_user", target_user)
        key = user.lower()
        if key in seen:
            problems.append(Problem(where, f"{column} {user!r} already has a row at {seen[key]}"))
            continue
        seen[key] = where
        accounts.append(Account(source_user, source_password, target_user, target_password, where))
    return accounts, problems


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (both from 1): the part of the accounts one machine syncs."""

    index: int
    count: int

    def __post_init__(self):
        if not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: K must be between 1 and N")

    @property
    def key(self) -> str:
        """``K/N``, as the report and the evidence name it."""
        return f"{self.index}/{self.count}"

    @property
    def slug(self) -> str:
        """``K-of-N``, for file and directory names."""
        return f"{self.index}-of-{self.count}"


def parse_shard(text: str) -> Shard:
    """``K/N`` (1 <= K <= N) as a :class:`Shard`; anything else is a ValueError saying what is expected."""
    match = re.fullmatch(r"(\d{1,6})/(\d{1,6})", text.strip())
    if not match:
        raise ValueError(f"{text!r} is not K/N (this machine's shard K of N machines, e.g. 2/3)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"{text!r}: K must be between 1 and N, and N at least 1 (e.g. 1/3, 2/3, 3/3)")
    return Shard(index, count)


def shard_of(source_user: str, count: int) -> int:
    """Which of ``count`` shards (1..count) syncs the account of ``source_user``.

    A SHA-256 of the normalised user (trimmed, Unicode NFC, lower case), so
    every machine, Python version and run agrees, whatever else the accounts
    file holds; Python's ``hash()`` is salted per process and would not.
    """
    normalised = unicodedata.normalize("NFC", source_user.strip()).lower()
    digest = hashlib.sha256(normalised.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def partition(accounts: Iterable[Account], shard: Shard) -> tuple[list[Account], int]:
    """The accounts of ``shard`` (in file order), and how many were left to the other shards."""
    mine, others = [], 0
    for account in accounts:
        if shard_of(account.source_user, shard.count) == shard.index:
            mine.append(account)
        else:
            others += 1
    return mine, others
