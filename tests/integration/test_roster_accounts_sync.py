"""One sheet in: `roster accounts` from a sheet with Japanese headers, used by a real `mailstack sync` between two Dovecots."""

from __future__ import annotations

import json
from email.message import EmailMessage

import pytest
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.local.imapserver import DovecotImap, User
from mailstack.stack.passwords import initial_password
from tests.conftest import PROJECT, require_imap_servers

pytestmark = pytest.mark.integration

OLD, NEW = "127.0.14.11", "127.0.14.12"
SEED = "M" * 48


def message(n: int) -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "a@example.org", "x@example.com", f"移行テスト {n}"
    mail["Message-ID"] = f"<sheet-{n}@example.org>"
    mail.set_content(f"body {n}\n")
    return mail.as_bytes().replace(b"\n", b"\r\n")


def test_the_accounts_file_from_a_japanese_sheet_moves_every_mailbox(tmp_path, monkeypatch):
    require_imap_servers()
    monkeypatch.chdir(PROJECT)
    sheet = tmp_path / "移行シート.csv"
    # Old logins without a domain and old passwords; new addresses with a new, a generated and a kept password.
    sheet.write_text("メールアドレス,氏名,容量,プロトコル,パスワード,旧メールアドレス,旧パスワード\n"
                     "taro@example.com,山田 太郎,1G,imap,Taro-Neu-2027,yamada,taro-alt\n"
                     "hanako@example.com,佐藤 花子,1G,pop,generate,sato,hanako-alt\n"
                     "info@example.com,代表,1G,imap,Info-same-pw,,\n", encoding="utf-8-sig")
    accounts = tmp_path / "accounts.csv"
    made = CliRunner().invoke(app, ["roster", "accounts", str(sheet), str(accounts), "-s", "dev"],
                              env={"MAILSTACK_PASSWORD_SEED": SEED})
    assert made.exit_code == 0, made.output
    old = DovecotImap(OLD, [User("yamada", "taro-alt"), User("sato", "hanako-alt"),
                            User("info@example.com", "Info-same-pw")])
    new = DovecotImap(NEW, [User("taro@example.com", "Taro-Neu-2027"),
                            User("hanako@example.com", initial_password(SEED, "hanako@example.com")),
                            User("info@example.com", "Info-same-pw")])
    with old, new:
        for user in ("yamada", "sato", "info@example.com"):
            client = old.client(user)  # the old passwords work, and selecting INBOX makes its Maildir
            client.select("INBOX")
            client.logout()
        for n, user in enumerate(["yamada", "yamada", "sato", "info@example.com"]):
            old.write_message(user, "INBOX", message(n), unique=f"1700000000.s{n}")
        for user in ("yamada", "sato", "info@example.com"):
            old.resync(user)
        result = CliRunner().invoke(app, ["sync", "--source", f"imap://{OLD}", "--target", f"imap://{NEW}",
                                          "--accounts", str(accounts), "--state-dir", str(tmp_path / "state"),
                                          "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["in_sync"] is True and len(report["mailboxes"]) == 3
        assert new.snapshot("taro@example.com").message_count() == 2
        assert new.snapshot("hanako@example.com").message_count() == 1
        assert new.snapshot("info@example.com").message_count() == 1
        assert "Taro-Neu-2027" not in result.output and "taro-alt" not in result.output
