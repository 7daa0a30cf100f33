"""The operator's sheet: the roster's columns, plus the old server's address and password of each mailbox.

One spreadsheet feeds both preparations of a migration: ``roster hash``
keeps the roster's columns (passwords hashed) and drops the old server's;
``roster accounts`` writes the sync's accounts file (old address and
password -> new address and password). The old server's columns are found
by their header (``old_address``, ``旧メールアドレス``, ``old_password``,
``旧パスワード``...) or named by the operator; without them the old address
is the new one and the old password is the new one.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from mailstack.problems import Problem
from mailstack.stack.roster import readers
from mailstack.stack.roster.columns import _header_key, unknown_column
from mailstack.stack.roster.model import GeneratePassword, PasswordHash
from mailstack.stack.roster.rows import CheckedRow, Table, validate_rows
from mailstack.sync.accounts import COLUMNS, Account

SOURCE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "source_user": ("old_address", "source_user", "source_address", "old_account",
                    "旧メールアドレス", "旧アドレス", "旧アカウント", "移行元メールアドレス", "移行元アドレス"),
    "source_password": ("old_password", "source_password", "旧パスワード", "移行元パスワード"),
}
_OPTION = {"source_user": "--source-column", "source_password": "--source-password-column"}


@dataclass(frozen=True)
class SourceColumns:
    """Headers naming the old server's address and password columns; None: found by their usual names."""

    source_user: str | None = None
    source_password: str | None = None


@dataclass
class Sheet:
    """The roster part of the sheet as a table, and each row's old-server cells by the row's position."""

    table: Table
    source_cells: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    problems: list[Problem] = field(default_factory=list)
    has_source_columns: bool = False


def _grid(path: Path) -> list[tuple[str, list[str]]]:
    """The sheet's rows of text cells with their positions (CSV or XLSX), as the roster readers see them."""
    shown = str(path)
    if path.suffix.lower() == ".csv":
        text = readers._decode(readers._read_bytes(path), ".csv")
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        rows, start = [], 1
        for cells in reader:
            rows.append((f"{shown}:{start}", cells))
            start = reader.line_num + 1
        return rows
    import openpyxl

    workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        sheet = workbook.worksheets[0]
        sheet.reset_dimensions()
        return [(f"{shown}:row {n}", [readers._cell_text(v) for v in values])
                for n, values in enumerate(sheet.iter_rows(values_only=True), start=1)]
    finally:
        workbook.close()


def _source_indexes(headers: list[str], where: str, wanted: SourceColumns) -> tuple[dict[str, int], list[Problem]]:
    """Which column holds each old-server field; a named column that is not there is a problem."""
    found, problems = {}, []
    keys = [_header_key(h) for h in headers]
    for name, synonyms in SOURCE_SYNONYMS.items():
        given = getattr(wanted, name)
        names = (given,) if given else synonyms
        for candidate in names:
            if _header_key(candidate) in keys:
                found[name] = keys.index(_header_key(candidate))
                break
        else:
            if given:
                shown = ", ".join(h for h in headers if h.strip())
                problems.append(Problem(where, f"{_OPTION[name]} {given!r}: no such column (the columns are: {shown})"))
    return found, problems


def read_sheet(path: str | Path, columns: SourceColumns = SourceColumns()) -> Sheet:
    """Read the operator's sheet (.csv, .xlsx; a .yaml roster has no old-server columns).

    The roster's columns are read by the roster reader itself, with all its
    checks; only the old server's cells are read here, and the reader's
    "unknown column" problems for them are dropped.
    """
    path = Path(path)
    table = readers.read_table(path)
    if path.suffix.lower() not in (".csv", ".xlsx") or not table.rows:
        return Sheet(table)
    try:
        grid = _grid(path)
    except Exception:  # read by the roster reader but not here: say so rather than guess the old cells
        return Sheet(table, problems=[Problem(str(path), "the old server's columns cannot be read")])
    header_where, headers = grid[0]
    indexes, problems = _source_indexes(headers, header_where, columns)
    known = {Problem(header_where, unknown_column(headers[i].strip())) for i in indexes.values()}
    table.problems = [p for p in table.problems if p not in known]
    source_cells = {where: {name: (cells[i].strip() if i < len(cells) else "") for name, i in indexes.items()}
                    for where, cells in grid[1:]}
    return Sheet(table, source_cells, problems, bool(indexes))


def _verifies(password: str, hashed: PasswordHash) -> bool | None:
    """Whether ``password`` matches a SHA-crypt hash; None when this scheme cannot be checked here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from passlib.hash import sha256_crypt, sha512_crypt
    handler = {"SHA512-CRYPT": sha512_crypt, "SHA256-CRYPT": sha256_crypt}.get(hashed.scheme)
    return None if handler is None else handler.verify(password, hashed.value)


def _account(checked: CheckedRow, cells: dict[str, str], seed: str | None) -> tuple[Account | None, str | None]:
    """A row's accounts line, or why it cannot have one."""
    from mailstack.stack.passwords import SEED_ENV, initial_password

    address, old_password = checked.address, cells.get("source_password", "")
    new_password, password = checked.plaintext, checked.password
    if new_password is None and isinstance(password, GeneratePassword):
        if not seed:
            return None, (f"password is generate: set {SEED_ENV} to the stack's seed so that the accounts file "
                          f"gets the generated password ({SEED_ENV}=$(pulumi stack output password_seed --show-secrets))")
        new_password = initial_password(seed, address, password.version)
    elif new_password is None and isinstance(password, PasswordHash):
        # A hash of the old password: the user keeps it, and the hash proves which one it is.
        if not old_password:
            return None, ("password is a hash, not the password itself: give the old password "
                          "(an old_password / 旧パスワード column) or write the new password in plain text")
        matches = _verifies(old_password, password)
        if matches is None:
            return None, f"password is a {password.scheme} hash, which cannot be checked here: write the password in plain text"
        if not matches:
            return None, "password is a hash that does not match the old password: write the new password in plain text"
        new_password = old_password
    source_user = cells.get("source_user") or address
    if any(ch.isspace() for ch in source_user):
        return None, f"old address {source_user!r} holds a space"
    return Account(source_user, old_password or new_password, address, new_password, checked.row.where), None


def accounts_from_sheet(path: str | Path, columns: SourceColumns = SourceColumns(), *,
                        domains: Iterable[str] | None = None, default_quota: str = "1G",
                        seed: str | None = None) -> tuple[list[Account], list[Problem]]:
    """The accounts file's lines from the operator's sheet, and every problem of every row (file and line)."""
    sheet = read_sheet(path, columns)
    checked, problems = validate_rows(sheet.table, domains=domains, default_quota=default_quota, plaintext_ok=True)
    problems = sheet.problems + problems
    bad = {p.where for p in problems}
    rows, first_of = [], {}
    for values in checked:
        where = values.row.where
        if values.address is None or where in bad:
            continue
        cells = sheet.source_cells.get(where)
        if cells is None and sheet.has_source_columns:
            # Never fall back to "same as new" for a row whose old cells were not found.
            problems.append(Problem(where, "the old server's cells of this row cannot be found"))
            continue
        row, problem = _account(values, cells or {}, seed)
        if problem:
            problems.append(Problem(where, problem))
            continue
        key = row.source_user.lower()
        if key in first_of:
            problems.append(Problem(where, f"old address {row.source_user!r} is also the old address at {first_of[key]}"))
            continue
        first_of[key] = where
        rows.append(row)
    return rows, problems


def accounts_csv(rows: list[Account]) -> str:
    """The accounts file's text: the header mailstack sync reads, then one line per mailbox."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([row.source_user, row.source_password, row.target_user, row.target_password])
    return out.getvalue()
