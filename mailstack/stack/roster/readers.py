"""Reading a roster file (CSV, XLSX, YAML) into rows of text cells with their positions, and the public load/check."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from mailstack.inputs import file_problem, xlsx_problem
from mailstack.problems import InputError, Problem
from mailstack.stack.roster.columns import REQUIRED, SYNONYMS, unknown_column, field_of_header
from mailstack.stack.roster.model import Mailbox, Roster
from mailstack.stack.roster.rows import Cell, Column, Row, Table, is_blank, validate_rows


_EXTENSIONS = (".csv", ".yaml", ".yml", ".xlsx")


class _Unreadable(Exception):
    """The file cannot be read at all: one problem, on the file or the line given."""

    def __init__(self, message: str, where: str | None = None):
        super().__init__(message)
        self.where = where


def read_table(path: Path) -> Table:
    """Read any roster format into rows of text cells; problems of the file's shape included."""
    shown = str(path)
    try:
        suffix = path.suffix.lower()
        if suffix not in _EXTENSIONS:
            hint = " (save it from Excel as .xlsx)" if suffix in (".xls", ".ods", ".numbers") else ""
            raise _Unreadable(f"unsupported file type '{path.suffix or '(none)'}'{hint}: use .csv, .yaml, .yml or .xlsx")
        too_big = file_problem(path, "a roster") or (xlsx_problem(path) if suffix == ".xlsx" else None)
        if too_big:
            raise _Unreadable(too_big)
        if suffix == ".xlsx":
            return _read_xlsx(path, shown)
        text = _decode(_read_bytes(path), suffix)
        return _read_yaml(text, shown) if suffix in (".yaml", ".yml") else _read_csv(text, shown)
    except _Unreadable as exc:
        return Table(shown, [], [Problem(exc.where or shown, str(exc))], None, {})


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


def _columns(headers: list[str], where: str) -> tuple[list[Column], list[Problem]]:
    """Map header cells to fields; unknown, duplicate and missing columns are problems."""
    columns, problems = [], []
    seen: dict[str, str] = {}
    for header in headers:
        header = header.strip()
        field = field_of_header(header) if header else None
        if header and field is None:
            problems.append(Problem(where, unknown_column(header)))
        elif field in seen:
            problems.append(Problem(where, f"columns '{seen[field]}' and '{header}' both give the {field}: keep one"))
            field = None
        elif field:
            seen[field] = header
        columns.append(Column(header, field))
    for field in REQUIRED:
        if field not in seen:
            others = ", ".join(SYNONYMS[field][1:])
            problems.append(Problem(where, f"missing required column '{field}' (or one of: {others})"))
    return columns, problems


def _grid_table(shown: str, grid: Iterable[tuple[str, list[str]]], empty: str) -> Table:
    """A table from a header row and data rows of text (CSV and XLSX)."""
    grid = iter(grid)
    first = next(grid, None)
    if first is None or not any(c.strip() for c in first[1]):
        where = first[0] if first else shown
        return Table(shown, [], [Problem(where, empty)], None, {})
    columns, problems = _columns(first[1], first[0])
    rows = []
    for where, cells in grid:
        if all(not c.strip() for c in cells):
            continue
        for index, cell in enumerate(cells):
            if cell.strip() and (index >= len(columns) or not columns[index].header):
                problems.append(Problem(where, f"has a value in column {index + 1}, which has no header"))
        named = tuple((columns[i], cell) for i, cell in enumerate(cells) if i < len(columns) and columns[i].field)
        rows.append(Row(where, named))
    headers = {c.field: c.header for c in columns if c.field}
    return Table(shown, rows, problems, frozenset(headers), headers)


_EMPTY_GRID = "the file is empty: its first row must be the header, e.g. address,password,quota"


def _read_csv(text: str, shown: str) -> Table:
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


def _read_xlsx(path: Path, shown: str) -> Table:
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


def _read_yaml(text: str, shown: str) -> Table:
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
            return Table(shown, [], problems, None, {}, default_quota)
    if root is None or (isinstance(items, yaml.ScalarNode) and items.tag == _NULL_TAG):
        return Table(shown, [], problems, None, {}, default_quota)
    if not isinstance(items, yaml.SequenceNode):
        message = "expected a list of mailboxes ('- address: ...' items), or mailboxes: holding that list"
        problems.append(Problem(_line(shown, items), message))
        return Table(shown, [], problems, None, {}, default_quota)
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
                problems.append(Problem(where, unknown_column(header or "?", "key")))
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
            cells.append((Column(header, field), cell))
        if unreadable or (cells and not all(is_blank(cell) for _, cell in cells)):
            rows.append(Row(where, tuple(cells), frozenset(unreadable)))
    return Table(shown, rows, problems, None, headers, default_quota)


# ---------------------------------------------------------------- public API


def _check(path: Path, domains: Iterable[str] | None, default_quota: str) -> tuple[Roster | None, list[Problem]]:
    table = read_table(path)
    checked, problems = validate_rows(table, domains=domains, default_quota=default_quota, plaintext_ok=False)
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
