"""One operators' sheet in: the roster (`roster hash`) and the sync's accounts file (`roster accounts`)."""

from __future__ import annotations

import warnings

import openpyxl
import pytest
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.stack.passwords import initial_password
from mailstack.stack.roster import hash_roster
from mailstack.stack.roster.sheet import SourceColumns, accounts_csv, accounts_from_sheet
from mailstack.sync.accounts import parse_accounts
from tests.conftest import PROJECT

SEED = "K" * 48
runner = CliRunner()

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from passlib.hash import sha512_crypt
OLD_HASH = "{SHA512-CRYPT}" + sha512_crypt.using(rounds=5000).hash("old-dave")

JAPANESE_SHEET = (
    "メールアドレス,氏名,容量,パスワード,旧メールアドレス,旧パスワード\n"
    "alice@example.com,Alice,1G,New-alice-2027,alice,old-alice\n"
    "bob@example.com,Bob,1G,generate,bob,old-bob\n"
    "carol@example.com,Carol,1G,Same-carol-2027,,\n"
    f"dave@example.com,Dave,1G,{OLD_HASH},dave,old-dave\n"
)


@pytest.fixture
def sheet(tmp_path):
    path = tmp_path / "移行シート.csv"
    path.write_text(JAPANESE_SHEET, encoding="utf-8-sig")
    return path


def test_a_sheet_with_japanese_headers_gives_old_and_new_address_and_password(sheet):
    rows, problems = accounts_from_sheet(sheet, domains=["example.com"], seed=SEED)
    assert problems == []
    got = [(r.source_user, r.source_password, r.target_user, r.target_password) for r in rows]
    assert got == [
        ("alice", "old-alice", "alice@example.com", "New-alice-2027"),
        ("bob", "old-bob", "bob@example.com", initial_password(SEED, "bob@example.com")),
        # No old columns filled: the same address and password on both servers.
        ("carol@example.com", "Same-carol-2027", "carol@example.com", "Same-carol-2027"),
        # A hash of the old password: the user keeps it.
        ("dave", "old-dave", "dave@example.com", "old-dave"),
    ]
    accounts, bad = parse_accounts(accounts_csv(rows), "accounts.csv")
    assert bad == [] and [a.target_user for a in accounts] == [r.target_user for r in rows]
    assert "old-alice" not in repr(rows)


def test_an_xlsx_sheet_whose_old_columns_have_other_names_is_read_with_the_mapping(tmp_path):
    path = tmp_path / "sheet.xlsx"
    workbook = openpyxl.Workbook()
    workbook.active.append(["アカウント", "パスワード", "移行前ID", "移行前PW"])
    workbook.active.append(["taro@example.com", "Taro-new-2027", "t.yamada", "taro-old"])
    workbook.save(path)
    rows, problems = accounts_from_sheet(path, SourceColumns("移行前ID", "移行前PW"))
    assert problems == []
    assert [(r.source_user, r.source_password, r.target_user) for r in rows] == [("t.yamada", "taro-old", "taro@example.com")]


def test_rows_that_cannot_give_a_password_are_each_reported_with_their_line(sheet, tmp_path):
    text = JAPANESE_SHEET.replace(",old-dave\n", ",not-daves-password\n")
    path = tmp_path / "s.csv"
    path.write_text(text)
    rows, problems = accounts_from_sheet(path, seed=None)
    assert [str(p) for p in problems] == [
        f"{path}:3: password is generate: set MAILSTACK_PASSWORD_SEED to the stack's seed so that the accounts file "
        "gets the generated password (MAILSTACK_PASSWORD_SEED=$(pulumi stack output password_seed --show-secrets))",
        f"{path}:5: password is a hash that does not match the old password: write the new password in plain text",
    ]
    assert [r.target_user for r in rows] == ["alice@example.com", "carol@example.com"]


def test_a_mapping_to_a_missing_column_names_the_columns_there_are(sheet):
    _, problems = accounts_from_sheet(sheet, SourceColumns(source_user="旧ID"))
    assert any(p.where == f"{sheet}:1" and "--source-column '旧ID': no such column (the columns are: メールアドレス, 氏名"
               in p.message for p in problems)


def test_roster_hash_of_the_same_sheet_leaves_the_old_servers_columns_out(sheet, tmp_path):
    dest = tmp_path / "roster.csv"
    assert hash_roster(sheet, dest) == 2  # alice and carol; bob is generate, dave a hash already
    written = dest.read_text(encoding="utf-8-sig")
    assert written.splitlines()[0] == "メールアドレス,氏名,容量,パスワード"
    assert "old-alice" not in written and "New-alice-2027" not in written and "旧" not in written


def test_roster_accounts_writes_a_0600_file_outside_the_work_tree(sheet, tmp_path, monkeypatch):
    monkeypatch.chdir(PROJECT)
    dest = tmp_path / "accounts.csv"
    result = runner.invoke(app, ["roster", "accounts", str(sheet), str(dest), "-s", "dev"],
                           env={"MAILSTACK_PASSWORD_SEED": SEED})
    assert result.exit_code == 0, result.output
    assert dest.stat().st_mode & 0o777 == 0o600 and "wrote" in result.output and "New-alice" not in result.output
    assert dest.read_text().splitlines()[0] == "source_user,source_password,target_user,target_password"


def test_roster_accounts_refuses_the_work_tree_and_a_missing_seed_and_writes_nothing(sheet, monkeypatch):
    monkeypatch.chdir(PROJECT)
    monkeypatch.delenv("MAILSTACK_PASSWORD_SEED", raising=False)
    dest = PROJECT / "accounts-test.csv"
    result = runner.invoke(app, ["roster", "accounts", str(sheet), str(dest)])
    assert result.exit_code == 1 and not dest.exists()
    assert "is inside the git work tree" in result.output and "password is generate" in result.output
    assert "old-alice" not in result.output
