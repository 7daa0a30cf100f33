"""The mailbox roster: formats, columns, validation, passwords, and hash_roster."""

from __future__ import annotations

import shutil
import stat
import subprocess
import warnings
from pathlib import Path

import openpyxl
import pytest

from mailstack.problems import InputError, Problem
from mailstack.stack.roster import (
    GeneratePassword,
    Mailbox,
    PasswordHash,
    Roster,
    check_roster,
    hash_roster,
    load_roster,
    parse_address,
    parse_password,
)

FIXTURES = Path(__file__).parent / "fixtures" / "roster"

# Made by `doveadm pw -s SCHEME -p 'correct horse'` (Dovecot 2.3).
SHA512 = "{SHA512-CRYPT}$6$h.8lUUTqaKc1m.TS$wbKdopsitwdpYIvKvb1fZCk30tiX4x0kfr70kCRsc.O.E9yX/FVm8yEhBXXWwxgSGECmrse6arilae4SPIAXN0"
SHA512_ROUNDS = "{SHA512-CRYPT}$6$rounds=10000$3qZNEWV8KvkaWAe9$aIazpnXWlsmgLtUt/klCai1Ouge6ym5rbJ8jorB1VPx40lOWUJSIyco4xTTlLIHLhgz5vs3epLkoObfEz7p/d/"
SHA256 = "{SHA256-CRYPT}$5$vJRreAc0lZa8QAIZ$xBN4S0u3oBTvXnOOUsNFAybOuieshKAGf6dWmjGe0f9"
BLF = "{BLF-CRYPT}$2y$05$LdMZzezV5uxG/Ydu7YOtluu0LE6eTl94kIxhRSDSqKvyQqPNh6tFe"
ARGON2ID = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$lcq4Aho+xsO/q/oHtVumXA$cBekncuzuP2tl4TOhal6+cgPYCt4ELKOjk3aiSEw3q4"
ARGON2I = "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$kUPi9SAU6gqHdk0IBsxKhA$sBJvGm9s8lDRoUNZgbXzvY8940xLMhkX89X6zh8RBP8"
BARE_SHA512 = SHA512.removeprefix("{SHA512-CRYPT}")

SECRET = "Hunter2-Tokyo!"  # a plain-text password that must never be echoed

needs_doveadm = pytest.mark.skipif(shutil.which("doveadm") is None, reason="Dovecot's doveadm is not installed")


def write(tmp_path: Path, text: str, name: str = "roster.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def write_xlsx(tmp_path: Path, rows: list[list[object]], name: str = "roster.xlsx") -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    # A second sheet the roster must ignore.
    workbook.create_sheet("notes").append(["address", "password"])
    path = tmp_path / name
    workbook.save(path)
    return path


def passlib_verifies(password: str, crypt_value: str) -> bool:
    """Check a SHA512-CRYPT hash without Dovecot."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # passlib imports the deprecated crypt module
        from passlib.hash import sha512_crypt
    return sha512_crypt.verify(password, crypt_value)


def only_problem(path: Path, **kwargs) -> Problem:
    problems = check_roster(path, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


def csv_roster(tmp_path: Path, *rows: str, header: str = "address,password,quota") -> Path:
    return write(tmp_path, "\n".join([header, *rows]) + "\n")


# ---------------------------------------------------------------- formats


def test_csv_roster_loads_mailboxes_with_defaults(tmp_path):
    path = csv_roster(tmp_path, f"Taro@Example.JP,{SHA512},2G", "hanako@example.jp,generate,")

    roster = load_roster(path)

    assert roster == Roster(
        (
            Mailbox("taro@example.jp", "", 2 * 1024**3, "imap", (), PasswordHash("SHA512-CRYPT", BARE_SHA512), f"{path}:2"),
            Mailbox("hanako@example.jp", "", 1024**3, "imap", (), GeneratePassword(1), f"{path}:3"),
        ),
        str(path),
    )


def test_csv_roster_reads_every_column(tmp_path):
    path = csv_roster(
        tmp_path,
        f"taro@example.jp,Yamada Taro,500M,POP3,info@example.jp;sales@example.jp,{SHA256}",
        header="address,name,quota,protocol,aliases,password",
    )

    (mailbox,) = load_roster(path)

    assert (mailbox.name, mailbox.quota_text, mailbox.protocol, mailbox.aliases) == (
        "Yamada Taro", "500M", "pop", ("info@example.jp", "sales@example.jp"),
    )
    assert mailbox.password.dovecot() == SHA256


def test_yaml_list_roster_reports_item_lines(tmp_path):
    path = write(tmp_path, f"""\
# mailboxes
- address: taro@example.jp
  password: '{SHA512}'
  quota: 2G

- address: hanako@example.jp
  name: 山田 花子
  password: generate:2
""", "roster.yaml")

    roster = load_roster(path)

    assert [(m.address, m.name, m.quota_text, m.password, m.where) for m in roster] == [
        ("taro@example.jp", "", "2G", PasswordHash("SHA512-CRYPT", BARE_SHA512), f"{path}:2"),
        ("hanako@example.jp", "山田 花子", "1G", GeneratePassword(2), f"{path}:6"),
    ]


def test_yaml_mailboxes_mapping_uses_its_default_quota(tmp_path):
    path = write(tmp_path, """\
default_quota: 5G
mailboxes:
  - address: taro@example.jp
    password: generate
  - {address: jiro@example.jp, password: generate, quota: unlimited}
""", "roster.yml")

    roster = load_roster(path, default_quota="1G")

    assert [(m.address, m.quota_text, m.where) for m in roster] == [
        ("taro@example.jp", "5G", f"{path}:3"),
        ("jiro@example.jp", "unlimited", f"{path}:5"),
    ]


def test_yaml_aliases_may_be_a_list_or_a_string(tmp_path):
    path = write(tmp_path, """\
- address: taro@example.jp
  password: generate
  aliases: [info@example.jp, Sales@example.jp]
- address: jiro@example.jp
  password: generate
  alias: "support@example.jp, help@example.jp"
""", "roster.yaml")

    roster = load_roster(path)

    assert [m.aliases for m in roster] == [
        ("info@example.jp", "sales@example.jp"),
        ("support@example.jp", "help@example.jp"),
    ]


def test_yaml_values_are_read_as_written_not_as_yaml_types(tmp_path):
    # YAML 1.1 would read 500 as an int and "no" as False; the roster sees the text.
    path = write(tmp_path, """\
- address: taro@example.jp
  name: no
  password: generate
  quota: 500
""", "roster.yaml")

    problem = only_problem(path)

    assert problem == Problem(f"{path}:1", "quota '500' has no unit: write 500M or 500G")


def test_xlsx_roster_reads_first_sheet_with_row_numbers(tmp_path):
    path = write_xlsx(tmp_path, [
        ["Address", "Password", "Quota"],
        ["taro@example.jp", SHA512, "2G"],
        [None, None, None],
        ["hanako@example.jp", "generate:3", None],
    ])

    roster = load_roster(path)

    assert [(m.address, m.quota_text, m.password, m.where) for m in roster] == [
        ("taro@example.jp", "2G", PasswordHash("SHA512-CRYPT", BARE_SHA512), f"{path}:row 2"),
        ("hanako@example.jp", "1G", GeneratePassword(3), f"{path}:row 4"),
    ]


def test_xlsx_problem_names_its_row(tmp_path):
    path = write_xlsx(tmp_path, [["address", "password", "quota"], ["taro@example.jp", "generate", 500]])

    problem = only_problem(path)

    assert problem == Problem(f"{path}:row 2", "quota '500' has no unit: write 500M or 500G")


def test_extension_is_case_insensitive(tmp_path):
    path = write(tmp_path, "address,password\ntaro@example.jp,generate\n", "ROSTER.CSV")

    assert len(load_roster(path)) == 1


# ---------------------------------------------------------------- headers


def test_headers_ignore_case_and_surrounding_spaces(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,2G", header=" ADDRESS , Password,QUOTA ")

    assert [m.quota_text for m in load_roster(path)] == ["2G"]


def test_english_synonyms_name_the_columns(tmp_path):
    path = csv_roster(
        tmp_path,
        "taro@example.jp,Taro,generate,info@example.jp",
        header="Email,Display_Name,password,alias",
    )

    (mailbox,) = load_roster(path)

    assert (mailbox.address, mailbox.name, mailbox.aliases) == ("taro@example.jp", "Taro", ("info@example.jp",))


def test_japanese_headers_are_synonyms(tmp_path):
    path = csv_roster(
        tmp_path,
        "taro@example.jp,山田 太郎,generate,2G,POP,info@example.jp",
        header="メールアドレス,氏名,パスワード,容量,プロトコル,エイリアス",
    )

    (mailbox,) = load_roster(path)

    assert (mailbox.address, mailbox.name, mailbox.quota_text, mailbox.protocol, mailbox.aliases) == (
        "taro@example.jp", "山田 太郎", "2G", "pop", ("info@example.jp",),
    )


def test_japanese_account_and_display_name_headers(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,太郎,generate", header="アカウント,表示名,パスワード")

    (mailbox,) = load_roster(path)

    assert (mailbox.address, mailbox.name) == ("taro@example.jp", "太郎")


def test_unknown_column_is_named_with_the_known_ones(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,2G", header="address,password,qouta")

    problem = only_problem(path)

    assert problem.where == f"{path}:1"
    assert "unknown column 'qouta' (did you mean 'quota'?)" in problem.message
    assert "known columns are address (account, email" in problem.message
    assert "password (パスワード)" in problem.message


def test_missing_required_column_is_reported_once(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,2G", "jiro@example.jp,1G", header="address,quota")

    problem = only_problem(path)

    assert problem == Problem(f"{path}:1", "missing required column 'password' (or one of: パスワード)")


def test_two_columns_for_one_field_are_refused(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,taro@example.jp,generate", header="address,email,password")

    problem = only_problem(path)

    assert problem == Problem(f"{path}:1", "columns 'address' and 'email' both give the address: keep one")


def test_value_under_no_header_is_refused(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,2G,oops")

    problem = only_problem(path)

    assert problem == Problem(f"{path}:2", "has a value in column 4, which has no header")


def test_yaml_unknown_key_is_reported_at_its_item(tmp_path):
    path = write(tmp_path, """\
- address: taro@example.jp
  password: generate
- address: jiro@example.jp
  password: generate
  qouta: 2G
""", "roster.yaml")

    problem = only_problem(path)

    assert problem.where == f"{path}:3"
    assert "unknown key 'qouta' (did you mean 'quota'?)" in problem.message


def test_yaml_item_without_password_key(tmp_path):
    path = write(tmp_path, "- address: taro@example.jp\n  quota: 2G\n", "roster.yaml")

    problem = only_problem(path)

    assert problem == Problem(f"{path}:1", "password is missing: write a password hash or generate")


def test_yaml_value_of_wrong_type_is_one_problem_per_field(tmp_path):
    path = write(tmp_path, """\
- address: taro@example.jp
  password: {hash: x}
  aliases: [{a: b}]
""", "roster.yaml")

    problems = check_roster(path)

    assert problems == [
        Problem(f"{path}:1", "password must be text, not a mapping"),
        Problem(f"{path}:1", "aliases must be text or a list of addresses, not a list holding mappings or lists"),
    ]


# ---------------------------------------------------------------- encodings and rows


def test_csv_with_utf8_bom(tmp_path):
    path = write(tmp_path, "address,password\ntaro@example.jp,generate\n", encoding="utf-8-sig")

    assert [m.address for m in load_roster(path)] == ["taro@example.jp"]


def test_csv_in_cp932_from_japanese_excel(tmp_path):
    path = write(tmp_path, "メールアドレス,氏名,パスワード\r\ntaro@example.jp,山田 太郎,generate\r\n", encoding="cp932")

    (mailbox,) = load_roster(path)

    assert (mailbox.address, mailbox.name) == ("taro@example.jp", "山田 太郎")


def test_csv_neither_utf8_nor_cp932_is_one_problem(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_bytes(b"address,password\n\x81\x20,generate\n")

    problem = only_problem(path)

    assert problem == Problem(str(path), "is neither UTF-8 nor Shift_JIS (cp932) text: save it as CSV UTF-8")


def test_blank_rows_are_skipped_and_lines_still_counted(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,2G", ",,", "", "jiro@example.jp,generate,2X")

    problem = only_problem(path)

    assert problem == Problem(f"{path}:5", "quota '2X': unknown unit 'X' (use K, M, G or T, e.g. 2G)")


def test_quoted_multiline_field_keeps_line_numbers(tmp_path):
    path = csv_roster(
        tmp_path,
        'taro@example.jp,"Taro\nYamada",generate,2G',
        "jiro@example.jp,Jiro,generate,2X",
        header="address,name,password,quota",
    )

    problem = only_problem(path)

    assert problem == Problem(f"{path}:4", "quota '2X': unknown unit 'X' (use K, M, G or T, e.g. 2G)")


def test_mailbox_after_multiline_field_knows_its_line(tmp_path):
    path = csv_roster(
        tmp_path,
        'taro@example.jp,"Taro\nYamada",generate',
        "jiro@example.jp,Jiro,generate",
        header="address,name,password",
    )

    roster = load_roster(path)

    assert [(m.name, m.where) for m in roster] == [("Taro\nYamada", f"{path}:2"), ("Jiro", f"{path}:4")]


def test_unclosed_quote_is_one_problem_at_its_line(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,1G", 'jiro@example.jp,"generate,1G', "saburo@example.jp,generate,1G")

    assert only_problem(path) == Problem(f"{path}:3", "not valid CSV: a quoted field is never closed")


def test_full_width_characters_in_address_are_normalised(tmp_path):
    path = csv_roster(tmp_path, "ｔａｒｏ＠ｅｘａｍｐｌｅ．ｊｐ,generate,２Ｇ")

    (mailbox,) = load_roster(path)

    assert (mailbox.address, mailbox.quota_text) == ("taro@example.jp", "2G")


# ---------------------------------------------------------------- files


def test_missing_file_is_one_problem(tmp_path):
    path = tmp_path / "nope.csv"

    with pytest.raises(InputError) as caught:
        load_roster(path)

    assert caught.value.problems == [Problem(str(path), "no such file")]
    assert caught.value.subject == f"roster {path}"


def test_wrong_extension_is_one_problem(tmp_path):
    path = write(tmp_path, "address,password\n", "roster.txt")

    problem = only_problem(path)

    assert problem == Problem(str(path), "unsupported file type '.txt': use .csv, .yaml, .yml or .xlsx")


def test_old_excel_format_gets_a_hint(tmp_path):
    path = write(tmp_path, "", "roster.xls")

    assert "(save it from Excel as .xlsx)" in only_problem(path).message


def test_directory_is_one_problem(tmp_path):
    path = tmp_path / "roster.csv"
    path.mkdir()

    assert only_problem(path) == Problem(str(path), "is a directory, not a roster file")


def test_damaged_xlsx_is_one_problem(tmp_path):
    path = write(tmp_path, "address,password\n", "roster.xlsx")

    problem = only_problem(path)

    assert problem.where == str(path)
    assert "cannot be read as an .xlsx workbook" in problem.message


def test_empty_csv_file(tmp_path):
    path = write(tmp_path, "")

    problem = only_problem(path)

    assert problem.where == str(path)
    assert "the file is empty: its first row must be the header" in problem.message


def test_header_only_roster_has_no_mailboxes(tmp_path):
    path = csv_roster(tmp_path, ",,")

    assert only_problem(path) == Problem(str(path), "the roster has no mailboxes")


def test_empty_yaml_roster_has_no_mailboxes(tmp_path):
    path = write(tmp_path, "mailboxes:\n", "roster.yaml")

    assert only_problem(path) == Problem(str(path), "the roster has no mailboxes")


def test_yaml_syntax_error_names_the_line_but_not_its_text(tmp_path):
    path = write(tmp_path, f"- address: taro@example.jp\n  password: {SECRET}\n\tquota: 2G\n", "roster.yaml")

    problem = only_problem(path)

    assert problem == Problem(f"{path}:3", "not valid YAML: found character '\\t' that cannot start any token")
    assert SECRET not in str(problem)


def test_yaml_of_wrong_shape(tmp_path):
    path = write(tmp_path, "\n\naddress: taro@example.jp\n", "roster.yaml")

    problems = check_roster(path)

    assert Problem(f"{path}:3", "unknown key 'address': known keys are mailboxes, default_quota") in problems
    assert any(p.where == str(path) and "no 'mailboxes:' list" in p.message for p in problems)


def test_yaml_item_that_is_not_a_mapping(tmp_path):
    path = write(tmp_path, "- address: taro@example.jp\n  password: generate\n- taro@example.jp\n", "roster.yaml")

    problem = only_problem(path)

    assert problem.where == f"{path}:3"
    assert "a mailbox must be a mapping" in problem.message


# ---------------------------------------------------------------- fields


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("taro", "address 'taro' has no @domain: write the full address, e.g. taro@example.jp"),
        ("ta ro@example.jp", "address 'ta ro@example.jp': the part before @ has the character ' '"),
        (".taro@example.jp", "must not start or end with a dot or have two dots in a row"),
        ("ta..ro@example.jp", "must not start or end with a dot or have two dots in a row"),
        ("taro.@example.jp", "must not start or end with a dot or have two dots in a row"),
        ("太郎@example.jp", "the part before @ must be ASCII"),
        ("taro@localhost", "address 'taro@localhost': the domain has no dot"),
        ("taro@exa_mple.jp", "the domain is not a valid domain name"),
        ("taro@-example.jp", "the domain is not a valid domain name"),
        ("taro@example..jp", "the domain is not a valid domain name"),
        ("taro@192.0.2.1", "the domain is an IP address"),
        ("a@b@example.jp", "has more than one @"),
        ("@example.jp", "has nothing before the @"),
        ("taro@", "has nothing after the @"),
    ],
)
def test_bad_address_is_refused_with_reason(tmp_path, address, message):
    path = csv_roster(tmp_path, "ok@example.jp,generate,1G", f'"{address}",generate,1G')

    problem = only_problem(path)

    assert problem.where == f"{path}:3"
    assert message in problem.message


def test_address_without_at_suggests_an_allowed_domain(tmp_path):
    path = csv_roster(tmp_path, "taro,generate,1G")

    problem = only_problem(path, domains=["example.co.jp"])

    assert problem == Problem(f"{path}:2", "address 'taro' has no @domain: write the full address, e.g. taro@example.co.jp")


def test_empty_address_cell(tmp_path):
    path = csv_roster(tmp_path, ",generate,1G")

    assert only_problem(path) == Problem(f"{path}:2", "address is empty")


def test_idna_domain_is_stored_as_a_label(tmp_path):
    path = csv_roster(tmp_path, "taro@例え.jp,generate,1G", "jiro@xn--r8jz45g.jp,generate,1G")

    roster = load_roster(path)

    assert [m.address for m in roster] == ["taro@xn--r8jz45g.jp", "jiro@xn--r8jz45g.jp"]
    assert roster.domains() == {"xn--r8jz45g.jp"}


@pytest.mark.parametrize("protocol", ["imap", "IMAP", "pop", "POP3", "Pop3"])
def test_protocol_accepts_imap_pop_and_pop3(tmp_path, protocol):
    path = csv_roster(tmp_path, f"taro@example.jp,generate,{protocol}", header="address,password,protocol")

    (mailbox,) = load_roster(path)

    assert mailbox.protocol == ("imap" if protocol.lower() == "imap" else "pop")


def test_bad_protocol_is_refused(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,smtp", header="address,password,protocol")

    assert only_problem(path) == Problem(f"{path}:2", "protocol 'smtp' is not imap or pop")


def test_quota_unlimited(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,Unlimited")

    (mailbox,) = load_roster(path)

    assert (mailbox.quota, mailbox.quota_text) == (None, "unlimited")


def test_default_quota_argument_fills_empty_quota(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,", "jiro@example.jp,generate,3G")

    assert [m.quota_text for m in load_roster(path, default_quota="512M")] == ["512M", "3G"]


def test_bad_default_quota_argument_is_a_problem(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,")

    problem = only_problem(path, default_quota="lots")

    assert problem.where == "mailstack:default_quota"
    assert "quota 'lots' is not a size" in problem.message


def test_bad_yaml_default_quota_names_its_line(tmp_path):
    path = write(tmp_path, "default_quota: 2X\nmailboxes:\n  - {address: t@example.jp, password: generate}\n", "r.yaml")

    assert only_problem(path) == Problem(f"{path}:1", "default_quota: quota '2X': unknown unit 'X' (use K, M, G or T, e.g. 2G)")


def test_aliases_split_on_spaces_commas_and_semicolons(tmp_path):
    path = csv_roster(tmp_path, 'taro@example.jp,generate,"a@example.jp b@example.jp,c@example.jp; D@example.jp"',
                      header="address,password,aliases")

    (mailbox,) = load_roster(path)

    assert mailbox.aliases == ("a@example.jp", "b@example.jp", "c@example.jp", "d@example.jp")


def test_bad_alias_is_refused(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,info", header="address,password,aliases")

    problem = only_problem(path)

    assert problem == Problem(f"{path}:2", "alias 'info' has no @domain: write the full address, e.g. info@example.jp")


def test_row_with_every_problem_gives_one_problem_per_field(tmp_path):
    path = csv_roster(tmp_path, f"taro,{SECRET},2X,smtp,info", header="address,password,quota,protocol,aliases")

    problems = check_roster(path)

    assert all(p.where == f"{path}:2" for p in problems)
    messages = [p.message for p in problems]
    assert len(messages) == 5, messages
    assert messages[0].startswith("address 'taro' has no @domain")
    assert messages[1].startswith("quota '2X': unknown unit 'X'")
    assert messages[2] == "protocol 'smtp' is not imap or pop"
    assert messages[3].startswith("alias 'info' has no @domain")
    assert messages[4].startswith("password is in plain text")


def test_problems_of_all_rows_are_collected_in_file_order(tmp_path):
    path = csv_roster(tmp_path, "a@example.jp,generate,2X", "b,generate,1G", "c@example.jp,generate,0G")

    with pytest.raises(InputError) as caught:
        load_roster(path)

    assert [p.where for p in caught.value.problems] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert str(caught.value).startswith(f"roster {path}: 3 problems\n")


# ---------------------------------------------------------------- duplicates and domains


def test_duplicate_address_reports_second_and_names_first(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,1G", "jiro@example.jp,generate,1G", "Taro@Example.jp,generate,1G")

    problem = only_problem(path)

    assert problem == Problem(f"{path}:4", f"address 'taro@example.jp' is listed twice: first at {path}:2")


def test_alias_equal_to_another_mailbox_address(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,jiro@example.jp", "jiro@example.jp,generate,",
                      header="address,password,aliases")

    problem = only_problem(path)

    assert problem.where == f"{path}:2"
    assert f"alias 'jiro@example.jp' is also the address of the mailbox at {path}:3" in problem.message


def test_alias_equal_to_own_address(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,taro@example.jp", header="address,password,aliases")

    problem = only_problem(path)

    assert problem.where == f"{path}:2"
    assert "alias 'taro@example.jp' is the mailbox's own address" in problem.message


def test_alias_shared_by_two_mailboxes(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,info@example.jp", "jiro@example.jp,generate,INFO@example.jp",
                      header="address,password,aliases")

    problem = only_problem(path)

    assert problem == Problem(
        f"{path}:3", f"alias 'info@example.jp' is listed twice: it is already an alias of taro@example.jp at {path}:2"
    )


def test_address_outside_domains_lists_the_allowed_ones(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,1G", "jiro@example.com,generate,1G")

    problem = only_problem(path, domains=["example.jp", "例え.jp"])

    assert problem == Problem(
        f"{path}:3", "address 'jiro@example.com' is not in the stack's domains: example.jp, xn--r8jz45g.jp (例え.jp)"
    )


def test_alias_outside_domains(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,info@example.com", header="address,password,aliases")

    problem = only_problem(path, domains=["example.jp"])

    assert problem == Problem(f"{path}:2", "alias 'info@example.com' is not in the stack's domains: example.jp")


def test_idna_domain_restriction_matches_either_form(tmp_path):
    path = csv_roster(tmp_path, "taro@例え.JP,generate,1G", "jiro@XN--R8JZ45G.jp,generate,1G")

    assert len(load_roster(path, domains=["例え.jp"])) == 2
    assert len(load_roster(path, domains=["xn--r8jz45g.jp."])) == 2


def test_subdomain_is_not_inside_its_parent_domain(tmp_path):
    path = csv_roster(tmp_path, "taro@mail.example.jp,generate,1G")

    problem = only_problem(path, domains=["example.jp"])

    assert problem.where == f"{path}:2"
    assert "is not in the stack's domains: example.jp" in problem.message


# ---------------------------------------------------------------- passwords


@pytest.mark.parametrize(
    ("cell", "scheme"),
    [
        (SHA512, "SHA512-CRYPT"),
        (SHA512_ROUNDS, "SHA512-CRYPT"),
        (SHA256, "SHA256-CRYPT"),
        (BLF, "BLF-CRYPT"),
        (BLF.replace("$2y$", "$2b$"), "BLF-CRYPT"),
        (BLF.replace("$2y$", "$2a$"), "BLF-CRYPT"),
        (ARGON2ID, "ARGON2ID"),
        (ARGON2I, "ARGON2I"),
    ],
)
def test_supported_hash_is_kept(cell, scheme):
    password = parse_password(cell)

    assert password.scheme == scheme
    assert password.dovecot() == cell


@pytest.mark.parametrize("cell", [SHA512, SHA256, BLF, ARGON2ID, ARGON2I])
def test_bare_crypt_string_gets_its_scheme_prefix(cell):
    bare = cell.split("}", 1)[1]

    assert parse_password(bare).dovecot() == cell


def test_bare_sha512_crypt_in_roster_is_normalised(tmp_path):
    path = csv_roster(tmp_path, f"taro@example.jp,{BARE_SHA512},1G")

    (mailbox,) = load_roster(path)

    assert mailbox.password == PasswordHash("SHA512-CRYPT", BARE_SHA512)
    assert mailbox.password.dovecot() == SHA512


def test_crypt_prefix_and_lower_case_scheme_become_the_specific_scheme():
    assert parse_password("{CRYPT}" + BARE_SHA512).dovecot() == SHA512
    assert parse_password(SHA512.replace("SHA512-CRYPT", "sha512-crypt")).dovecot() == SHA512


@pytest.mark.parametrize(("cell", "version"), [("generate", 1), ("Generate", 1), ("generate:3", 3), (" generate : 12 ", 12)])
def test_generate_gives_the_password_version(cell, version):
    assert parse_password(cell) == GeneratePassword(version)


def test_generate_with_version_in_roster(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate:3,1G")

    (mailbox,) = load_roster(path)

    assert mailbox.password == GeneratePassword(3)


@pytest.mark.parametrize("cell", ["generate:0", "generate:x", "generate:", "generate:-1"])
def test_generate_with_bad_version_is_refused(tmp_path, cell):
    path = csv_roster(tmp_path, f"taro@example.jp,{cell},1G")

    problem = only_problem(path)

    assert problem == Problem(f"{path}:2", "password generate:N needs a whole number N of 1 or more, e.g. generate:2")


def test_truncated_sha512_hash_is_refused(tmp_path):
    path = csv_roster(tmp_path, f"taro@example.jp,{SHA512[:-6]},1G")

    problem = only_problem(path)

    assert problem.where == f"{path}:2"
    assert problem.message == (
        "password: the SHA512-CRYPT hash looks truncated: copy the whole hash (its hash part has 80 characters, not 86)"
    )


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        (SHA512.split("$", 3)[0] + "$6$h.8lUUTqaKc1m.TS", "SHA512-CRYPT hash looks truncated"),
        (SHA256[:-1], "SHA256-CRYPT hash looks truncated"),
        (BLF[:-10], "BLF-CRYPT hash looks truncated"),
        (ARGON2ID.rsplit("$", 1)[0], "ARGON2ID hash looks truncated"),
        (ARGON2I[:-30], "ARGON2I hash looks truncated"),
        (SHA512 + "xx", "SHA512-CRYPT hash looks damaged"),
        (SHA512.replace("wbKd", "wb!d"), "SHA512-CRYPT hash looks damaged"),
        (BLF.replace("$05$", "$99$"), "its cost 99 is not 04 to 31"),
        ("{SHA512-CRYPT}abc", "has the {SHA512-CRYPT} prefix but no SHA512-CRYPT hash after it"),
        ("{SHA512-CRYPT}" + SHA256.split("}", 1)[1], "holds a SHA256-CRYPT hash: write {SHA256-CRYPT}"),
    ],
)
def test_broken_hash_is_refused_with_reason(tmp_path, cell, message):
    path = csv_roster(tmp_path, "ok@example.jp,generate,1G", f'taro@example.jp,"{cell}",1G')

    problem = only_problem(path)

    assert problem.where == f"{path}:3"
    assert message in problem.message


@pytest.mark.parametrize("cell", ["{MD5}$1$abcdefgh$0123456789abcdef", "{PLAIN-MD5}1a1dc91c907325c69271ddf0c944bc72",
                                  "{CRAM-MD5}e02d374fde0dc75a17a557039a3a5338", "{ssha512}AAAA"])
def test_other_dovecot_scheme_is_unsupported_and_named(tmp_path, cell):
    path = csv_roster(tmp_path, f"taro@example.jp,{cell},1G")

    problem = only_problem(path)

    scheme = cell[1:cell.index("}")].upper()
    assert problem.where == f"{path}:2"
    assert f"password uses the unsupported hash scheme {{{scheme}}}" in problem.message
    assert "supported are SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, ARGON2ID, ARGON2I" in problem.message


def test_unknown_scheme_is_refused_without_echoing_it(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,{Hunter2}Tokyo,1G")

    problem = only_problem(path)

    assert problem.where == f"{path}:2"
    assert "password uses an unknown hash scheme" in problem.message
    assert "Hunter2" not in problem.message and "Tokyo" not in problem.message


@pytest.mark.parametrize(("cell", "name"), [("$1$abcdefgh$0123456789abcdefghij", "MD5-CRYPT"), ("$y$j9T$abc$def", "yescrypt")])
def test_unsupported_crypt_format_is_named(tmp_path, cell, name):
    path = csv_roster(tmp_path, f"taro@example.jp,{cell},1G")

    problem = only_problem(path)

    assert problem.where == f"{path}:2"
    assert f"password is an unsupported {name} hash: supported are SHA512-CRYPT" in problem.message


@pytest.mark.parametrize("cell", [SECRET, "{PLAIN}" + SECRET, "{CLEARTEXT}" + SECRET, "{plain}" + SECRET, "12345678"])
def test_plaintext_password_is_refused_and_never_shown(tmp_path, cell):
    path = csv_roster(tmp_path, f"taro@example.jp,{cell},1G")

    with pytest.raises(InputError) as caught:
        load_roster(path)

    (problem,) = caught.value.problems
    assert problem.where == f"{path}:2"
    assert "plain-text password" in problem.message or "password is in plain text" in problem.message
    assert "doveadm pw -s SHA512-CRYPT" in problem.message
    assert "mailstack roster hash SRC DEST" in problem.message
    secret = cell.split("}")[-1]
    for text in (problem.message, str(problem), repr(problem), str(caught.value), repr(caught.value)):
        assert secret not in text


def test_plaintext_is_not_in_the_exception_of_parse_password():
    with pytest.raises(ValueError) as caught:
        parse_password(SECRET)

    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_empty_password_cell(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,,1G")

    assert only_problem(path) == Problem(f"{path}:2", "password is empty: write a password hash or generate")


@needs_doveadm
@pytest.mark.parametrize("scheme", ["SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2ID", "ARGON2I"])
def test_hash_made_by_doveadm_is_accepted(scheme):
    made = subprocess.run(["doveadm", "pw", "-s", scheme, "-p", "correct horse"],
                          capture_output=True, text=True, check=True).stdout.strip()

    assert parse_password(made).dovecot() == made
    assert parse_password(made.split("}", 1)[1]).dovecot() == made


def test_parse_address_normalises_case_and_idna():
    assert parse_address(" Taro.Yamada+news@例え.JP ") == "taro.yamada+news@xn--r8jz45g.jp"


# ---------------------------------------------------------------- API


def test_check_roster_returns_no_problems_for_a_good_roster(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,1G")

    assert check_roster(path, domains=["example.jp"]) == []


def test_roster_is_sized_iterable_and_knows_its_domains(tmp_path):
    path = csv_roster(tmp_path, "taro@example.jp,generate,info@example.net", "jiro@example.com,generate,",
                      header="address,password,aliases")

    roster = load_roster(path)

    assert len(roster) == 2
    assert [m.domain for m in roster] == ["example.jp", "example.com"]
    assert roster.domains() == {"example.jp", "example.net", "example.com"}
    assert roster.source == str(path)


# ---------------------------------------------------------------- hash_roster


def plaintext_csv(tmp_path: Path) -> Path:
    return write(tmp_path, (
        "メールアドレス,氏名,パスワード,容量\n"
        f"taro@example.jp,山田 太郎,{SECRET},2G\n"
        "hanako@example.jp,山田 花子,パス ワード,1G\n"
        f"jiro@example.jp,,{SHA256},\n"
        "saburo@example.jp,,generate:2,500M\n"
    ), "plain.csv")


def test_hash_roster_hashes_only_plaintext_passwords(tmp_path):
    src = plaintext_csv(tmp_path)
    dest = tmp_path / "roster.csv"

    count = hash_roster(src, dest)

    roster = load_roster(dest)
    assert count == 2
    assert [m.address for m in roster] == ["taro@example.jp", "hanako@example.jp", "jiro@example.jp", "saburo@example.jp"]
    assert [m.password.scheme for m in roster.mailboxes[:2]] == ["SHA512-CRYPT", "SHA512-CRYPT"]
    assert roster.mailboxes[2].password.dovecot() == SHA256
    assert roster.mailboxes[3].password == GeneratePassword(2)
    assert [m.name for m in roster][:2] == ["山田 太郎", "山田 花子"]


def test_hash_roster_csv_keeps_the_source_columns_with_a_bom(tmp_path):
    dest = tmp_path / "roster.csv"

    hash_roster(plaintext_csv(tmp_path), dest)

    assert dest.read_bytes().startswith(b"\xef\xbb\xbf")  # BOM: Excel then reads it as UTF-8
    assert dest.read_text(encoding="utf-8-sig").splitlines()[0] == "メールアドレス,氏名,パスワード,容量"


def test_hash_roster_writes_hashes_verified_by_passlib(tmp_path):
    dest = tmp_path / "roster.csv"
    hash_roster(plaintext_csv(tmp_path), dest)

    first = load_roster(dest).mailboxes[0].password
    assert passlib_verifies(SECRET, first.value)
    assert not passlib_verifies(SECRET + "x", first.value)
    assert SECRET not in dest.read_text(encoding="utf-8")


def doveadm_verifies(dovecot_hash: str, password: str) -> subprocess.CompletedProcess:
    return subprocess.run(["doveadm", "pw", "-t", dovecot_hash, "-p", password], capture_output=True, text=True)


@needs_doveadm
def test_hash_roster_hash_is_verified_by_dovecot(tmp_path):
    dest = tmp_path / "roster.csv"
    hash_roster(plaintext_csv(tmp_path), dest)
    taro, hanako = load_roster(dest).mailboxes[:2]

    right = doveadm_verifies(taro.password.dovecot(), SECRET)
    spaced = doveadm_verifies(hanako.password.dovecot(), "パス ワード")
    wrong = doveadm_verifies(taro.password.dovecot(), "hunter2-tokyo!")

    assert (right.returncode, "(verified)" in right.stdout) == (0, True)
    assert (spaced.returncode, "(verified)" in spaced.stdout) == (0, True)
    assert wrong.returncode != 0 and "(verified)" not in wrong.stdout


def test_hash_roster_uses_dovecot_default_rounds(tmp_path):
    dest = tmp_path / "roster.csv"
    hash_roster(plaintext_csv(tmp_path), dest)

    value = load_roster(dest).mailboxes[0].password.value

    # rounds=5000 is the implicit default, written without rounds= as doveadm does.
    assert value.startswith("$6$") and "rounds=" not in value


def test_hash_roster_dest_is_private(tmp_path):
    dest = tmp_path / "roster.csv"

    hash_roster(plaintext_csv(tmp_path), dest)

    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.csv", "roster.csv"]


def test_hash_roster_leaves_source_unchanged(tmp_path):
    src = plaintext_csv(tmp_path)
    before = src.read_bytes()

    hash_roster(src, tmp_path / "roster.csv")

    assert src.read_bytes() == before


@pytest.mark.parametrize("via_link", [False, True])
def test_hash_roster_refuses_to_overwrite_its_source(tmp_path, via_link):
    src = plaintext_csv(tmp_path)
    before = src.read_bytes()
    dest = src
    if via_link:
        dest = tmp_path / "link.csv"
        dest.symlink_to(src)

    with pytest.raises(InputError) as caught:
        hash_roster(src, dest, overwrite=True)

    message = "is the source file: write the hashed roster to a new file, then delete the source"
    assert caught.value.problems == [Problem(str(dest), message)]
    assert src.read_bytes() == before


def test_hash_roster_refuses_existing_dest(tmp_path):
    dest = write(tmp_path, "keep me\n", "roster.csv")

    with pytest.raises(InputError) as caught:
        hash_roster(plaintext_csv(tmp_path), dest)

    assert caught.value.problems == [Problem(str(dest), "already exists: choose a new file name, or allow overwriting it")]
    assert dest.read_text() == "keep me\n"


def test_hash_roster_overwrites_existing_dest_when_allowed(tmp_path):
    dest = write(tmp_path, "old\n", "roster.csv")
    dest.chmod(0o644)

    hash_roster(plaintext_csv(tmp_path), dest, overwrite=True)

    assert len(load_roster(dest)) == 4
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


def test_hash_roster_xlsx_to_yaml(tmp_path):
    src = write_xlsx(tmp_path, [
        ["account", "password", "quota", "aliases"],
        ["taro@example.jp", SECRET, "2G", "info@example.jp sales@example.jp"],
        ["hanako@example.jp", 12345678, None, None],
    ])
    dest = tmp_path / "roster.yaml"

    assert hash_roster(src, dest) == 2

    roster = load_roster(dest)
    assert [(m.address, m.quota_text, m.aliases, m.where) for m in roster] == [
        ("taro@example.jp", "2G", ("info@example.jp", "sales@example.jp"), f"{dest}:2"),
        ("hanako@example.jp", "1G", (), f"{dest}:6"),
    ]
    assert dest.read_text(encoding="utf-8").startswith("mailboxes:\n- account: taro@example.jp\n")


def test_hash_roster_yaml_keeps_default_quota_and_hashes_the_number_as_written(tmp_path):
    src = write(tmp_path, "default_quota: 3G\nmailboxes:\n  - address: taro@example.jp\n    password: 0123\n", "plain.yaml")
    dest = tmp_path / "roster.yml"

    hash_roster(src, dest)

    (mailbox,) = load_roster(dest)
    assert mailbox.quota_text == "3G"
    # YAML would read 0123 as the octal number 83; the password is what was typed.
    assert passlib_verifies("0123", mailbox.password.value)


def test_hash_roster_strips_plain_prefix_before_hashing(tmp_path):
    src = write(tmp_path, f"address,password\ntaro@example.jp,{{PLAIN}}{SECRET}\n", "plain.csv")
    dest = tmp_path / "roster.csv"

    hash_roster(src, dest)

    assert passlib_verifies(SECRET, load_roster(dest).mailboxes[0].password.value)


def test_hash_roster_problems_write_nothing_and_hide_passwords(tmp_path):
    src = write(tmp_path, (
        "address,password,quota\n"
        f"taro@example.jp,{SECRET},2X\n"
        f"taro,{SECRET},1G\n"
        "jiro@example.jp,{MD5}$1$abcdefgh$0123456789abcdef,1G\n"
        f"saburo@example.jp, {SECRET},1G\n"
    ), "plain.csv")
    dest = tmp_path / "roster.csv"

    with pytest.raises(InputError) as caught:
        hash_roster(src, dest)

    assert [(p.where, p.message.split(":")[0]) for p in caught.value.problems] == [
        (f"{src}:2", "quota '2X'"),
        (f"{src}:3", "address 'taro' has no @domain"),
        (f"{src}:4", "password uses the unsupported hash scheme {MD5}"),
        (f"{src}:5", "password has spaces at the start or end, which are most likely a mistake"),
    ]
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.csv"]


def test_hash_roster_refuses_xlsx_dest(tmp_path):
    dest = tmp_path / "roster.xlsx"

    with pytest.raises(InputError) as caught:
        hash_roster(plaintext_csv(tmp_path), dest)

    assert caught.value.problems == [Problem(str(dest), "cannot write '.xlsx' files: name it .csv, .yaml or .yml")]


def test_hash_roster_checks_domains(tmp_path):
    with pytest.raises(InputError) as caught:
        hash_roster(plaintext_csv(tmp_path), tmp_path / "roster.csv", domains=["example.com"])

    assert len(caught.value.problems) == 4
    assert caught.value.problems[0].where == f"{tmp_path / 'plain.csv'}:2"
    assert "is not in the stack's domains: example.com" in caught.value.problems[0].message


def test_hash_roster_fixture_matches_expected_roster(tmp_path):
    dest = tmp_path / "roster.csv"

    count = hash_roster(FIXTURES / "operators.csv", dest)

    roster = load_roster(dest, domains=["example.jp"])
    assert count == 3
    assert [(m.address, m.name, m.quota_text, m.protocol) for m in roster] == [
        ("taro@example.jp", "山田 太郎", "2G", "imap"),
        ("hanako@example.jp", "鈴木 花子", "1536M", "pop"),
        ("jiro@example.jp", "佐藤 次郎", "1G", "imap"),
    ]
    assert (FIXTURES / "operators.csv").read_bytes().startswith(b"\x83\x81")  # still the cp932 source
