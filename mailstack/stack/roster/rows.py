"""Roster rows checked: every problem of every row, with its file position; pure decisions over text cells."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from mailstack.inputs import cell_problem
from mailstack.problems import Problem
from mailstack.stack.quota import parse_quota
from mailstack.stack.roster.addresses import allowed_domains, domain_shown, parse_address
from mailstack.stack.roster.hashes import PlaintextPassword, plaintext_of, plaintext_problem, parse_password
from mailstack.stack.roster.model import Password


Cell = str | tuple[str, ...]


@dataclass(frozen=True)
class Column:
    header: str  # as written in the file
    field: str | None  # None: unknown column


@dataclass(frozen=True, repr=False)
class Row:
    """One non-blank row: its position and its cells (which may hold a plain-text password)."""

    where: str
    cells: tuple[tuple[Column, Cell], ...]
    # Fields whose value could not be read as text (already reported): not checked again.
    unreadable: frozenset[str] = frozenset()

    def get(self, field: str) -> Cell | None:
        return next((value for column, value in self.cells if column.field == field), None)

    def __repr__(self) -> str:
        # Never show cell values: in hash_roster's input they include passwords.
        return f"Row({self.where!r})"


@dataclass
class Table:
    """A roster file read into rows of text, before validation."""

    source: str
    rows: list[Row]
    problems: list[Problem]
    # Fields that have a column (CSV/XLSX); None when each row names its own keys (YAML).
    columns: frozenset[str] | None
    headers: dict[str, str]  # field -> header naming it in the file, in file order
    default_quota: tuple[str, str] | None = None  # (text, where) from a YAML file


def is_blank(cell: Cell) -> bool:
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
class CheckedRow:
    """A row's validated values (None where its field has a problem)."""

    row: Row
    address: str | None = None
    name: str = ""
    quota: int | None = None
    protocol: str = "imap"
    aliases: tuple[str, ...] = ()
    password: Password | None = None
    plaintext: str | None = None  # hash_roster only; never reaches a Mailbox

    def __repr__(self) -> str:
        return f"CheckedRow({self.row.where!r}, {self.address!r})"


def _bounded(row: Row) -> tuple[Row, list[str]]:
    """The row without its cells that are too long to be a roster value, and one message for each."""
    messages, bad = [], set()
    for column, value in row.cells:
        problem = next(filter(None, (cell_problem(column.field or column.header, text, formula_ok=True)
                                     for text in ((value,) if isinstance(value, str) else value))), None)
        if problem:
            messages.append(problem)
            bad.add(column.field)
    if not bad:
        return row, []
    return Row(row.where, tuple(c for c in row.cells if c[0].field not in bad), row.unreadable | bad), messages


def _formula_problems(checked: CheckedRow, quota_text: str) -> list[str]:
    """Values otherwise valid that a spreadsheet would run as a formula (``+tag@...``, ``=HYPERLINK(...)``).

    Checked on values that passed their own validation, so a bad address gets one message, not two.
    The password is never written back as it is (hash_roster writes its hash): it may begin like a formula.
    """
    values = [("address", checked.address or ""), ("name", checked.name),
              ("quota", quota_text if checked.quota is not None else "")]
    values += [("alias", alias) for alias in checked.aliases]
    return [p for p in (cell_problem(label, text) for label, text in values) if p]


def _check_row(row: Row, rules: _Rules) -> tuple[CheckedRow, list[str]]:
    """Validate one row on its own; returns its values and one message per bad field."""
    row, messages = _bounded(row)
    checked = CheckedRow(row)

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
    messages += _formula_problems(checked, quota)

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
        except PlaintextPassword as exc:
            if not rules.plaintext_ok:
                messages.append(str(exc))
            else:
                plaintext = plaintext_of(password)
                problem = (plaintext_problem(plaintext) if plaintext is not None
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
    allowed = ", ".join(domain_shown(d) for d in domains)
    return f"{what} '{address}' is not in the stack's domains: {allowed}"


def _check_rows(rows: list[Row], rules: _Rules) -> tuple[list[CheckedRow], list[Problem]]:
    """Validate every row, then what rows must agree on: no address or alias used twice."""
    checked: list[CheckedRow] = []
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


def _example_domain(rows: list[Row], domains: tuple[str, ...] | None) -> str:
    """The domain to suggest for an address written without one."""
    if domains:
        return domains[0]
    found = Counter()
    for row in rows:
        cell = row.get("address")
        if isinstance(cell, str) and "@" in cell:
            found[cell.strip().rpartition("@")[2].lower()] += 1
    return found.most_common(1)[0][0] if found else "example.com"


def validate_rows(
    table: Table,
    *,
    domains: Iterable[str] | None,
    default_quota: str,
    plaintext_ok: bool,
) -> tuple[list[CheckedRow], list[Problem]]:
    """All problems of a read table, and its rows' values."""
    problems = list(table.problems)
    quota_text, quota_where = table.default_quota or (default_quota, "mailstack:default_quota")
    try:
        default = parse_quota(quota_text)
    except ValueError as exc:
        default = None
        problems.append(Problem(quota_where, f"default_quota: {exc}"))
    allowed = allowed_domains(domains)
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
