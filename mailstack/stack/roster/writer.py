"""``mailstack roster hash``: the operators' spreadsheet of plain-text passwords written as a roster of hashes."""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

import yaml

from mailstack.files import write_private
from mailstack.inputs import excel_safe
from mailstack.problems import InputError, Problem
from mailstack.stack.roster.rows import Cell, CheckedRow, is_blank, validate_rows
from mailstack.stack.roster.sheet import read_sheet


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


def _output_cells(checked: CheckedRow, hashed: str | None) -> dict[str, Cell]:
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
    writer.writerow([excel_safe(header) for header in headers.values()])
    for cells in rows:
        writer.writerow([excel_safe(_joined(cells.get(field, ""))) for field in headers])
    return out.getvalue()


def _joined(cell: Cell) -> str:
    return " ".join(cell) if isinstance(cell, tuple) else cell


def _render_yaml(headers: dict[str, str], rows: list[dict[str, Cell]], default_quota: str | None) -> str:
    mailboxes = [
        {header: (list(cells[f]) if isinstance(cells[f], tuple) else cells[f])
         for f, header in headers.items() if f in cells and not is_blank(cells[f])}
        for cells in rows
    ]
    document: dict[str, Any] = {}
    if default_quota is not None:
        document["default_quota"] = default_quota
    document["mailboxes"] = mailboxes
    # A wide line keeps each hash on one line.
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False, width=4096)


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
    the passwords; the old server's columns of the operator's sheet (see
    :mod:`.sheet`) are left out. Everything but the passwords is validated as by
    :func:`load_roster`; on any problem nothing is written and
    :class:`InputError` lists them all. Refuses to write over ``src``, and
    over an existing ``dest`` unless ``overwrite``. Returns how many
    passwords were hashed.
    """
    src_path, dest_path = Path(src), Path(dest)
    hasher = _hasher(scheme, rounds)
    table = read_sheet(src_path).table
    checked, problems = validate_rows(table, domains=domains, default_quota=default_quota, plaintext_ok=True)
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
        write_private(dest_path, text, encoding=encoding, overwrite=overwrite)
    except FileExistsError:
        raise InputError(f"roster {src}", [Problem(str(dest_path), _DEST_EXISTS)]) from None
    return count
