"""Bounds on the files an operator hands in (roster, accounts): checked before anything is parsed.

A roster of 5,000 mailboxes with hashes is about 1 MB; the limits below
leave room for far more while keeping memory and time small whatever the
file holds. An XLSX file is a zip archive: its members' declared sizes are
summed before openpyxl opens it, and Python's zipfile never inflates a
member past its declared size (it fails the CRC check instead), so the sum
bounds what parsing can cost.

Cells that begin like a spreadsheet formula (``=``, ``+``, ``-``, ``@``, tab,
carriage return: OWASP's "CSV injection") are refused in a roster, and any
CSV meant for Excel writes such text escaped (:func:`excel_safe`).
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_FILE_BYTES = 16 * 1024 * 1024        # a roster or accounts file
MAX_XLSX_UNCOMPRESSED = 64 * 1024 * 1024  # an XLSX workbook, all members inflated
MAX_XLSX_MEMBERS = 1000
MAX_CELL_CHARS = 4096                     # one roster or accounts cell

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _size(count: int) -> str:
    return f"{count / (1024 * 1024):.1f} MiB" if count >= 1024 * 1024 else f"{count} bytes"


def file_problem(path: Path, what: str) -> str | None:
    """Why the file is refused before reading (too large), or None; a missing file is left to the reader."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return None
    if size > MAX_FILE_BYTES:
        return f"is {_size(size)}: {what} may be at most {_size(MAX_FILE_BYTES)}; split it or remove what is not needed"
    return None


def xlsx_problem(path: Path) -> str | None:
    """Why the XLSX archive is refused before openpyxl reads it (it would inflate absurdly), or None.

    A file that is not a zip archive is left to openpyxl, which says so.
    """
    import zipfile  # here: a CSV roster (every sync) never needs it, and it costs the start-up lzma, bz2, shutil

    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    if len(members) > MAX_XLSX_MEMBERS:
        return f"holds {len(members)} parts; a roster workbook has a few dozen at most (limit {MAX_XLSX_MEMBERS})"
    inflated = sum(m.file_size for m in members)
    if inflated > MAX_XLSX_UNCOMPRESSED:
        return (f"would inflate to {_size(inflated)} when opened (limit {_size(MAX_XLSX_UNCOMPRESSED)}): "
                f"not a roster; save the sheet again from Excel")
    return None


def cell_problem(label: str, text: str, *, formula_ok: bool = False) -> str | None:
    """Why one cell is refused (too long, or read as a formula by a spreadsheet), or None."""
    if len(text) > MAX_CELL_CHARS:
        return f"{label} is {len(text)} characters long; a cell may hold at most {MAX_CELL_CHARS}"
    if not formula_ok and text.startswith(FORMULA_START):
        return (f"{label} begins with {text[0]!r}: a spreadsheet would run it as a formula; "
                f"remove the leading character")
    return None


def excel_safe(text: str) -> str:
    """Text for a CSV cell Excel will open: a formula-looking value gets a leading ``'`` (shown, never run)."""
    return "'" + text if text.startswith(FORMULA_START) else text
