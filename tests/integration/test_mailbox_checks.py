"""The mailbox comparison of `mailstack verify` and the old-server watch of `mailstack status`, against real Dovecot servers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage

import pytest
from typer.testing import CliRunner

from mailstack.checks import Status, Target
from mailstack.checks.mailboxes import CHECK, judge_mailboxes, mailbox_check
from mailstack.checks.outbound import CHECK as OUTBOUND_CHECK
from mailstack.cli import app
from mailstack.local.dnsserver import AuthoritativeDns
from mailstack.local.imapserver import DovecotImap, User
from mailstack.imap.endpoint import Endpoint
from mailstack.migration.status import old_server_activity
from mailstack.sync.accounts import Account
from mailstack.sync.compare import FolderCounts, MailboxComparison, compare_mailboxes
from mailstack.sync.engine import SyncOptions, run_sync
from mailstack.sync.plan import FolderRules
from tests.conftest import require_imap_servers, require_tool

pytestmark = pytest.mark.integration

OLD, NEW, DNS = "127.0.7.1", "127.0.7.2", "127.0.7.3"
SOURCE, TARGET = Endpoint("imap", OLD, 143), Endpoint("imap", NEW, 143)
FOLDERS = ["INBOX", "Sent", "Sent Items", "日本語", 'Say "hi"', "Archive/2024"]
CUTOVER = datetime(2026, 11, 3, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def servers():
    """A Courier-style old server (``INBOX.`` prefix, ``.`` separator) and a plain new one; both stopped afterwards."""
    require_imap_servers()
    old = DovecotImap(OLD, [User("alice", "old-a"), User("bob", "old-b")], separator=".", prefix="INBOX.")
    new = DovecotImap(NEW, [User("alice@example.com", "new-a"), User("bob@example.com", "new-b")],
                      host_name="mail.example.com")
    with old, new:
        yield old, new


@pytest.fixture
def dns():
    """A DNS server for example.com with no mail records: the DNS checks fail at once (none answering, after 3 s)."""
    require_tool("knotd")
    with AuthoritativeDns(DNS, ["example.com"]) as server:
        server.serve([])
        yield server


def message(n: int) -> bytes:
    mail = EmailMessage()
    mail["From"] = "sender@example.org"
    mail["To"] = "alice@example.com"
    mail["Subject"] = f"message {n}"
    mail["Message-ID"] = f"<{n}@example.org>"
    mail.set_content(f"body {n}\n")
    return mail.as_bytes().replace(b"\n", b"\r\n")


def write(server: DovecotImap, user: str, folder: str, arrivals: list[datetime], start: int = 0) -> None:
    for n, arrived in enumerate(arrivals, start=start):
        server.write_message(user, folder, message(n), internaldate=arrived.timestamp(), unique=f"{user}-{folder}-{n}"
                             .replace("/", "_"))
    server.resync(user)


def fill(server: DovecotImap, user: str, count: int = 3) -> None:
    """``count`` messages in every folder of FOLDERS, all before the cutover."""
    for folder in FOLDERS[1:]:
        server.create_folder(user, folder)
    for i, folder in enumerate(FOLDERS):
        write(server, user, folder, [CUTOVER - timedelta(days=10, hours=n) for n in range(count)], start=100 * i)


def accounts(*names: str, source_passwords: dict | None = None) -> list[Account]:
    passwords = source_passwords or {}
    return [Account(n, passwords.get(n, f"old-{n[0]}"), f"{n}@example.com", f"new-{n[0]}", f"accounts.csv:{i + 2}")
            for i, n in enumerate(names)]


def synced(servers, tmp_path, *names: str) -> list[Account]:
    old, _ = servers
    for name in names:
        fill(old, name)
    account_list = accounts(*names)
    results = run_sync(account_list, SOURCE, TARGET, SyncOptions(state_dir=tmp_path / "state"))
    assert all(r.in_sync for r in results), [r.errors for r in results]
    return account_list


# ------------------------------------------------------------------ verify: mailboxes match the old server


def test_mailboxes_match_after_a_sync_with_folders_paired_across_namespaces(servers, tmp_path):
    account_list = synced(servers, tmp_path, "alice", "bob")
    comparisons = compare_mailboxes(account_list, SOURCE, TARGET)
    assert [c.differences for c in comparisons] == [[], []]
    alice = comparisons[0]
    # INBOX.Sent on the old server is compared with Sent on the new one.
    assert {(f.name, f.target, f.source_messages, f.target_messages) for f in alice.folders} == {
        (name, name, 3, 3) for name in FOLDERS}
    (result,) = mailbox_check(account_list, SOURCE, TARGET)(Target("mail.example.com", "example.com"))
    assert result.check == CHECK and result.status is Status.OK
    assert result.detail == f"2 mailboxes, {2 * len(FOLDERS)} folders, {2 * 3 * len(FOLDERS)} messages match"


def test_mail_that_reached_the_old_server_after_the_sync_is_a_difference_naming_folder_and_counts(servers, tmp_path):
    old, _ = servers
    account_list = synced(servers, tmp_path, "alice", "bob")
    write(old, "alice", "Sent Items", [CUTOVER + timedelta(hours=1), CUTOVER + timedelta(hours=2)], start=900)
    alice, bob = compare_mailboxes(account_list, SOURCE, TARGET)
    assert alice.differences == ["Sent Items: 5 messages on the old server, 3 on the new one (2 missing)"]
    assert bob.matches
    result = judge_mailboxes([alice, bob])
    assert result.status is Status.ERROR
    assert result.detail == ("1 of 2 mailboxes differ:\nalice -> alice@example.com: "
                             "Sent Items: 5 messages on the old server, 3 on the new one (2 missing)")
    assert "mailstack sync" in result.remedy


def test_only_the_first_differences_are_listed_and_the_rest_counted():
    folders = [FolderCounts(f"F{n}", f"F{n}", 2, 1) for n in range(4)]
    comparisons = [MailboxComparison("alice", "alice@example.com", folders),
                   MailboxComparison("bob", "bob@example.com", error="old server imap://x:143: login as 'bob' refused"),
                   MailboxComparison("carol", "carol@example.com", folders[:1])]
    result = judge_mailboxes(comparisons)
    assert result.detail.splitlines() == [
        "3 of 3 mailboxes differ:",
        "alice -> alice@example.com: " + "; ".join(f"F{n}: 2 messages on the old server, 1 on the new one (1 missing)"
                                                  for n in range(4)),
        "bob -> bob@example.com: old server imap://x:143: login as 'bob' refused",
        "and 1 more"]
    assert "password" in result.remedy and "mailstack sync" in result.remedy


def test_a_folder_missing_on_the_new_server_is_a_difference(servers, tmp_path):
    old, _ = servers
    account_list = synced(servers, tmp_path, "alice")
    old.create_folder("alice", "Projects/日本")
    (alice,) = compare_mailboxes(account_list, SOURCE, TARGET)
    assert alice.differences == ["Projects/日本: 0 messages on the old server, no such folder on the new one"]


def test_mail_delivered_to_the_new_server_after_the_cutover_still_matches(servers, tmp_path):
    _, new = servers
    account_list = synced(servers, tmp_path, "alice")
    write(new, "alice@example.com", "INBOX", [CUTOVER + timedelta(days=1)], start=900)
    (alice,) = compare_mailboxes(account_list, SOURCE, TARGET)
    assert alice.matches
    assert next(f for f in alice.folders if f.name == "INBOX").target_messages == 4


def test_renamed_folders_are_compared_under_their_new_name(servers, tmp_path):
    old, _ = servers
    fill(old, "alice")
    rules = FolderRules(renames=(("Sent Items", "Sent/Outlook"),))
    run_sync(accounts("alice"), SOURCE, TARGET, SyncOptions(state_dir=tmp_path / "state", rules=rules))
    (alice,) = compare_mailboxes(accounts("alice"), SOURCE, TARGET, rules)
    assert alice.matches and any(f.label == "Sent Items -> Sent/Outlook" for f in alice.folders)
    (unrenamed,) = compare_mailboxes(accounts("alice"), SOURCE, TARGET)
    assert unrenamed.differences == ["Sent Items: 3 messages on the old server, no such folder on the new one"]


def test_a_wrong_password_is_an_error_for_that_mailbox_only_and_never_shows_the_password(servers, tmp_path):
    synced(servers, tmp_path, "alice", "bob")
    wrong = accounts("alice", "bob", source_passwords={"alice": "Wr0ng-Secret"})
    alice, bob = compare_mailboxes(wrong, SOURCE, TARGET)
    assert alice.error and "login as 'alice' refused" in alice.error and "old server" in alice.error
    assert "Wr0ng-Secret" not in alice.error and not alice.folders
    assert bob.matches
    result = judge_mailboxes([alice, bob])
    assert result.status is Status.ERROR and "alice -> alice@example.com" in result.detail
    assert "Wr0ng-Secret" not in result.detail + result.remedy
    assert "password" in result.remedy and "mailstack sync" not in result.remedy


def test_an_unreachable_new_server_is_an_error_not_an_exception(servers, tmp_path):
    account_list = synced(servers, tmp_path, "alice")
    (alice,) = compare_mailboxes(account_list, SOURCE, Endpoint("imap", "127.0.7.9", 143))
    assert alice.error and "cannot connect to new server imap://127.0.7.9:143" in alice.error


# ------------------------------------------------------------------ status: mail still arriving at the old server


def test_old_server_activity_finds_mail_newer_than_the_cutover_in_any_folder(servers, tmp_path):
    old, _ = servers
    fill(old, "alice")
    fill(old, "bob")
    newest = CUTOVER + timedelta(hours=5)
    write(old, "alice", "Sent Items", [CUTOVER + timedelta(minutes=1)], start=900)
    write(old, "alice", "日本語", [newest], start=910)
    write(old, "alice", 'Say "hi"', [CUTOVER - timedelta(minutes=1)], start=920)  # same day, before the cutover
    bundle = tmp_path / "ca.pem"
    bundle.write_text(old.cert.read_text())
    alice, bob = old_server_activity(Endpoint("imaps", OLD, 993), [("alice", "old-a"), ("bob", "old-b")], CUTOVER,
                                     str(bundle))
    assert (alice.account, alice.messages, alice.newest, alice.error) == ("alice", 2, newest, None)
    assert (bob.messages, bob.newest, bob.error) == (0, None, None)


def test_old_server_activity_reports_nothing_when_all_mail_is_older_than_the_cutover(servers):
    old, _ = servers
    fill(old, "alice")
    write(old, "alice", "日本語", [CUTOVER + timedelta(hours=5)], start=900)
    (alice,) = old_server_activity(Endpoint("imap", OLD, 143), [("alice", "old-a")], CUTOVER + timedelta(days=1))
    assert (alice.messages, alice.newest, alice.error) == (0, None, None)


def test_old_server_activity_reports_a_wrong_password_for_that_account_only(servers):
    old, _ = servers
    fill(old, "bob")
    write(old, "bob", "INBOX", [CUTOVER + timedelta(hours=1)], start=900)
    alice, bob = old_server_activity(Endpoint("imap", OLD, 143), [("alice", "Wr0ng-Secret"), ("bob", "old-b")], CUTOVER)
    assert alice.error and "login as 'alice' refused" in alice.error and "Wr0ng-Secret" not in alice.error
    assert (bob.messages, bob.error) == (1, None)


# ------------------------------------------------------------------ the verify command line


def test_verify_rejects_a_bad_accounts_file_with_file_and_line_before_checking_anything(tmp_path):
    bad = tmp_path / "accounts.csv"
    bad.write_text("source_user,source_password,target_user,target_password\n"
                   "alice,old-a,alice@example.com,new-a\n"
                   "bob,old-b,,new-b\n")
    result = CliRunner().invoke(app, ["verify", "--host", "mail.example.com", "--domain", "example.com",
                                      "--source", "imap://127.0.7.1"], env={"MAILSTACK_SYNC_ACCOUNTS": str(bad)})
    assert result.exit_code == 1, result.output
    assert f"{bad}:3: target_user empty" in result.output
    assert "old-b" not in result.output and "new-b" not in result.output


def test_verify_with_accounts_needs_the_old_server(tmp_path):
    good = tmp_path / "accounts.csv"
    good.write_text("source_user,source_password,target_user,target_password\nalice,old-a,alice@example.com,new-a\n")
    result = CliRunner().invoke(app, ["verify", "--host", "mail.example.com", "--domain", "example.com",
                                      "--accounts", str(good), "--map", "Sent Items"])
    assert result.exit_code == 1, result.output
    assert "--source: give the old server" in result.output and "--map:" in result.output


def test_verify_compares_the_mailboxes_given_accounts_and_says_so_when_skipped(servers, dns, tmp_path):
    old, new = servers
    synced(servers, tmp_path, "alice")
    csv = tmp_path / "accounts.csv"
    csv.write_text("source_user,source_password,target_user,target_password\nalice,old-a,alice@example.com,new-a\n")
    args = ["verify", "--host", "mail.example.com", "--domain", "example.com", "--address", NEW,
            "--cafile", str(new.cert), "--dns-server", dns.server, "--json"]
    # Only Dovecot runs on the new address: the other checks fail; the mailbox comparison passes over imaps
    # to --address, the certificate checked against the host name.
    result = CliRunner().invoke(app, args + ["--accounts", str(csv), "--source", f"imap://{OLD}"])
    report = json.loads(result.stdout)
    (row,) = [r for r in report["results"] if r["check"] == CHECK]
    assert row["status"] == "ok" and row["detail"] == f"1 mailboxes, {len(FOLDERS)} folders, {3 * len(FOLDERS)} messages match"
    # Without -s or --outbound-probe the outbound check is skipped (it has no address to send to); nothing else is.
    assert [s["check"] for s in report["skipped"]] == [OUTBOUND_CHECK]

    write(old, "alice", "Sent", [CUTOVER + timedelta(hours=1)], start=900)
    result = CliRunner().invoke(app, args + ["--accounts", str(csv), "--source", f"imap://{OLD}"])
    (row,) = [r for r in json.loads(result.stdout)["results"] if r["check"] == CHECK]
    assert row["status"] == "error" and "Sent: 4 messages on the old server, 3 on the new one" in row["detail"]
    assert result.exit_code == 3

    result = CliRunner().invoke(app, args, env={"MAILSTACK_SYNC_ACCOUNTS": ""})
    report = json.loads(result.stdout)
    assert CHECK not in [r["check"] for r in report["results"]]
    assert [s["check"] for s in report["skipped"]] == [CHECK, OUTBOUND_CHECK]
    assert report["skipped"][0]["check"] == CHECK and "--accounts" in report["skipped"][0]["reason"]
