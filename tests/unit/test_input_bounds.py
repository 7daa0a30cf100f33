"""Roster and accounts files are bounded before they are parsed: bombs built here, each refused fast."""

from __future__ import annotations

import csv
import io
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import openpyxl
import pytest
from typer.testing import CliRunner

from mailstack import inputs
from mailstack.cli import app
from mailstack.problems import InputError
from mailstack.stack.roster import check_roster, hash_roster, load_roster
from mailstack.sync.accounts import read_accounts

HEADER = "source_user,source_password,target_user,target_password\n"


def workbook(path: Path, rows: list[list[str]]) -> Path:
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    book.save(path)
    return path


def with_member(xlsx: Path, name: str, chunks, out: Path) -> Path:
    """A copy of ``xlsx`` whose member ``name`` is replaced by the bytes of ``chunks``, written as they come."""
    with zipfile.ZipFile(xlsx) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as copy:
        for item in source.infolist():
            if item.filename != name:
                copy.writestr(item, source.read(item))
        with copy.open(name, "w", force_zip64=True) as member:
            for chunk in chunks:
                member.write(chunk)
    return out


def refused_fast(check, *, seconds: float = 1.0, peak_bytes: int = 20_000_000):
    """Run ``check``; it must finish within ``seconds`` and allocate less than ``peak_bytes`` at its peak."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = check()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    assert elapsed < seconds and peak < peak_bytes, (elapsed, peak)
    return result


# ------------------------------------------------------------------ rosters


def test_an_xlsx_with_a_huge_shared_string_is_refused_before_it_is_opened(tmp_path):
    small = workbook(tmp_path / "small.xlsx", [["address", "password"], ["taro@example.jp", "generate"]])
    chunk = b"A" * (16 * 1024 * 1024)
    text = (b'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/'
            b'2006/main" count="1" uniqueCount="1"><si><t>', *([chunk] * 64), b"</t></si></sst>")
    bomb = with_member(small, "xl/sharedStrings.xml", text, tmp_path / "bomb.xlsx")
    assert 0.5e6 < bomb.stat().st_size < 1.5e6  # about 1 MB on disk, 1 GiB once inflated
    (problem,) = refused_fast(lambda: check_roster(bomb))
    assert problem.where == str(bomb) and "would inflate to 1024.0 MiB" in problem.message


def test_an_xlsx_that_lies_about_its_sizes_is_never_inflated_past_them(tmp_path):
    small = workbook(tmp_path / "small.xlsx", [["address", "password"], ["taro@example.jp", "generate"]])
    name = "xl/worksheets/sheet1.xml"
    liar = tmp_path / "liar.xlsx"
    with zipfile.ZipFile(small) as source, zipfile.ZipFile(liar, "w", zipfile.ZIP_DEFLATED) as copy:
        for item in source.infolist():
            copy.writestr(item.filename, source.read(item) if item.filename != name else b"A" * (96 * 1024 * 1024))
    data = bytearray(liar.read_bytes())
    with zipfile.ZipFile(liar) as archive:
        offset = archive.getinfo(name).header_offset
    struct.pack_into("<I", data, offset + 22, 1000)  # the local header's uncompressed size
    entry = data.find(b"PK\x01\x02")
    while data[entry + 46:entry + 46 + len(name)] != name.encode():
        entry = data.find(b"PK\x01\x02", entry + 4)
    struct.pack_into("<I", data, entry + 24, 1000)  # the central directory's
    liar.write_bytes(bytes(data))
    # Declared small, so the bound lets it through; zipfile stops at the declared size and fails its CRC.
    (problem,) = refused_fast(lambda: check_roster(liar))
    assert problem.message == "cannot be read as an .xlsx workbook (BadZipFile): save it again from Excel"


def test_a_zip_bomb_of_many_parts_is_refused(tmp_path):
    bomb = tmp_path / "parts.xlsx"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        for n in range(inputs.MAX_XLSX_MEMBERS + 1):
            archive.writestr(f"xl/part{n}.xml", b"")
    (problem,) = refused_fast(lambda: check_roster(bomb))
    assert "holds 1001 parts" in problem.message


def test_a_300_mb_csv_is_refused_by_its_size_without_being_read(tmp_path):
    big = tmp_path / "roster.csv"
    with big.open("wb") as file:
        file.truncate(300 * 1024 * 1024)  # sparse: nothing to write, much to read
    (problem,) = refused_fast(lambda: check_roster(big))
    assert problem.message == ("is 300.0 MiB: a roster may be at most 16.0 MiB; split it or remove what is not "
                               "needed")


def test_a_cell_over_the_limit_is_refused_at_its_line(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_text(f"address,name,password\ntaro@example.jp,{'x' * 5000},generate\nhanako@example.jp,H,generate\n")
    (problem,) = check_roster(path)
    assert problem.where == f"{path}:2" and problem.message == (
        "name is 5000 characters long; a cell may hold at most 4096")


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://example.net\",\"click\")", "+81 3 0000", "-x", "@SUM(A1)"])
def test_a_formula_looking_value_is_refused_in_the_roster_at_its_line(tmp_path, cell):
    path = tmp_path / "roster.csv"
    rows = [["address", "name", "password"], ["taro@example.jp", cell, "generate"]]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    path.write_text(buffer.getvalue())
    (problem,) = check_roster(path)
    assert problem.where == f"{path}:2"
    assert problem.message.startswith(f"name begins with {cell[0]!r}: a spreadsheet would run it as a formula")


def test_a_formula_looking_address_or_alias_is_refused_once(tmp_path):
    path = workbook(tmp_path / "roster.xlsx", [["address", "aliases", "password"],
                                               ["+tag@example.jp", "-sales@example.jp", "generate"]])
    problems = check_roster(path)
    assert [(p.where, p.message.split(":")[0]) for p in problems] == [
        (f"{path}:row 2", "address begins with '+'"), (f"{path}:row 2", "alias begins with '-'")]


def test_roster_hash_refuses_formulas_keeps_passwords_that_begin_like_one_and_writes_excel_safe_csv(tmp_path):
    source = tmp_path / "sheet.csv"  # as text: openpyxl would store a value beginning with '=' as a formula
    source.write_text("address,name,password\ntaro@example.jp,Taro,=not-a-formula-but-a-password\n")
    dest = tmp_path / "roster.csv"
    assert hash_roster(source, dest) == 1
    row = dest.read_text(encoding="utf-8-sig").splitlines()[1]
    assert row.startswith("taro@example.jp,Taro,{SHA512-CRYPT}$6$") and "not-a-formula" not in row
    book = openpyxl.Workbook()
    book.active.append(["address", "name", "password"])
    book.active.append(["taro@example.jp", "=1+1", "x"])
    book.active["B2"].data_type = "s"  # text, as Excel keeps '=1+1 typed with a leading apostrophe
    bad = tmp_path / "bad.xlsx"
    book.save(bad)
    result = CliRunner().invoke(app, ["roster", "hash", str(bad), str(tmp_path / "other.csv")])
    assert result.exit_code == 1 and f"{bad}:row 2: name begins with '='" in result.output
    assert not (tmp_path / "other.csv").exists()


def test_excel_safe_text_is_shown_by_excel_never_run():
    assert inputs.excel_safe("=HYPERLINK(\"x\")") == "'=HYPERLINK(\"x\")"
    assert [inputs.excel_safe(t) for t in ("+1", "-1", "@A", "\tA", "taro@example.jp")] == [
        "'+1", "'-1", "'@A", "'\tA", "taro@example.jp"]


def test_a_roster_within_the_bounds_still_loads(tmp_path):
    path = workbook(tmp_path / "roster.xlsx", [["address", "name", "password"],
                                               *[[f"user{n}@example.jp", f"User {n}", "generate"] for n in range(500)]])
    assert len(load_roster(path)) == 500


# ------------------------------------------------------------------ accounts


def test_an_accounts_field_over_128_kib_gives_one_clean_message(tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text(HEADER + "alice,ok,alice@example.com,ok\n" + f"bob,\"{'p' * 200_000}\",bob@example.com,x\n")
    with pytest.raises(InputError) as caught:
        read_accounts(path)
    (problem,) = caught.value.problems
    assert problem.where == f"{path}:3"
    assert problem.message.startswith("not valid CSV: a field is far too long")
    assert "pppp" not in str(caught.value.report())
    result = CliRunner().invoke(app, ["sync", "--source", "imap://127.0.16.250", "--target", "imap://127.0.16.251",
                                      "--accounts", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output and "far too long" in result.output


def test_an_accounts_field_over_the_cell_limit_is_a_problem_of_its_row_only(tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text(HEADER + f"alice,{'p' * 5000},alice@example.com,x\nbob,ok,bob@example.com,ok\n")
    accounts, problems = read_accounts(path)
    assert [a.source_user for a in accounts] == ["bob"]
    assert [(p.where, p.message) for p in problems] == [
        (f"{path}:2", "source_password is longer than 4096 characters")]


def test_a_huge_accounts_file_is_refused_by_its_size_without_being_read(tmp_path):
    path = tmp_path / "accounts.csv"
    with path.open("wb") as file:
        file.truncate(300 * 1024 * 1024)
    with pytest.raises(InputError) as caught:
        refused_fast(lambda: read_accounts(path))
    assert "is 300.0 MiB: an accounts file may be at most 16.0 MiB" in caught.value.report()
