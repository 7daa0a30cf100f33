"""`mailstack sync` between two real Dovecot servers on loopback: fidelity, increments, faults, bad input."""

from __future__ import annotations

import json
import random
import shutil
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.local.imapserver import DovecotImap, User
from mailstack.sync.accounts import Account
from mailstack.imap.client import tls_context
from mailstack.imap.endpoint import Endpoint
from mailstack.sync.engine import SyncOptions, run_sync
from mailstack.sync.plan import FolderRules
from tests.conftest import PROJECT, require_imap_servers
from tests.faultproxy import CuttingProxy

pytestmark = pytest.mark.integration

OLD, NEW = "127.0.4.11", "127.0.4.12"
FOLDERS = ["INBOX", "Sent", "Archive/2024", "Archive/日本語 メール", "Sent Items", "Trash"]
T0 = 1_700_000_000


@pytest.fixture
def servers():
    """A Courier-style old server (``INBOX.`` prefix, ``.`` separator) and a plain new one."""
    require_imap_servers()
    old = DovecotImap(OLD, [User("alice", "old-a"), User("bob", "old-b"), User("carol", "old-c")],
                      separator=".", prefix="INBOX.")
    new = DovecotImap(NEW, [User("alice@example.com", "new-a"), User("bob@example.com", "new-b"),
                            User("carol@example.com", "new-c", quota="40K")])
    with old, new:
        yield old, new


def message(n: int, *, size: int = 0, message_id: bool = True) -> bytes:
    mail = EmailMessage()
    mail["From"] = f"sender{n % 7}@example.org"
    mail["To"] = "alice@example.com"
    mail["Subject"] = f"message {n} 日本語"
    mail["Date"] = "Tue, 14 Nov 2023 22:13:20 +0000"
    if message_id:
        mail["Message-ID"] = f"<{n}@example.org>"
    mail.set_content(f"body {n}\n")
    if size:
        mail.add_attachment(random.Random(n).randbytes(size), maintype="application", subtype="octet-stream",
                            filename=f"file{n}.bin")
    return mail.as_bytes().replace(b"\n", b"\r\n")


def fill(server: DovecotImap, user: str, count: int, *, seed: int = 1, big: int = 0, start: int = 0) -> None:
    """``count`` messages over every folder: flags, dates, no-Message-ID ones, exact duplicates, ``big`` large ones."""
    rng = random.Random(seed)
    if start == 0:  # the first fill of this mailbox creates its folders
        for folder in FOLDERS[1:]:
            server.create_folder(user, folder, subscribe=folder != "Trash")
    for n in range(start, start + count):
        folder = FOLDERS[n % len(FOLDERS)]
        body = message(n, size=1_500_000 if n - start < big else rng.choice([0, 0, 0, 2000, 30000]),
                       message_id=n % 5 != 0)
        flags = rng.sample(["\\Seen", "\\Answered", "\\Flagged", "\\Draft", "\\Deleted"], rng.randint(0, 3))
        server.write_message(user, folder, body, flags=flags, internaldate=T0 + n * 3600, unique=f"{T0 + n}.m{n}")
        if n % 17 == 0:  # an exact duplicate: same bytes, same date
            server.write_message(user, folder, body, flags=flags, internaldate=T0 + n * 3600, unique=f"{T0 + n}.d{n}")
    server.resync(user)
    client = server.client(user)
    try:  # keywords can only be set through IMAP
        client.select("INBOX")
        client.uid("STORE", "1:3", "+FLAGS", "($Forwarded Project-X)")
    finally:
        client.logout()


def accounts(*names: str, passwords: dict | None = None) -> list[Account]:
    passwords = passwords or {}
    return [Account(n, passwords.get(n, f"old-{n[0]}"), f"{n}@example.com", f"new-{n[0]}") for n in names]


def sync(old, new, account_list, tmp_path, **options):
    source = options.pop("source", Endpoint("imap", OLD, 143))
    target = options.pop("target", Endpoint("imap", NEW, 143))
    return run_sync(account_list, source, target, SyncOptions(state_dir=tmp_path / "state", **options))


def same(old: DovecotImap, new: DovecotImap, user: str) -> None:
    source, target = old.snapshot(user), new.snapshot(f"{user}@example.com")
    assert target.folders == source.folders
    assert target.subscribed == source.subscribed


# ------------------------------------------------------------------ fidelity and increments


def test_a_full_copy_is_exact_folders_bytes_flags_dates_and_subscriptions(servers, tmp_path):
    old, new = servers
    fill(old, "alice", 90, big=2)
    fill(old, "bob", 30, seed=2)
    results = sync(old, new, accounts("alice", "bob"), tmp_path, jobs=2)
    assert [r.in_sync for r in results] == [True, True], [r.errors for r in results]
    alice = old.snapshot("alice")
    assert results[0].total("copied") == alice.message_count() > 90  # duplicates copied too
    assert set(alice.folders) == set(FOLDERS) and "Trash" not in alice.subscribed
    assert any("$Forwarded" in flags for counts in alice.folders.values() for (_, flags, _) in counts)
    same(old, new, "alice")
    same(old, new, "bob")


def test_mail_that_reached_the_new_server_first_is_not_copied_back_to_it(servers, tmp_path):
    """A rollback's reverse sync puts mail delivered to the new host on the old one: the next sync must pair it."""
    old, new = servers
    fill(old, "alice", 12)
    sync(old, new, accounts("alice"), tmp_path)
    delivered = message(5000)  # delivered to the new host during the cutover
    new.write_message("alice@example.com", "INBOX", delivered, flags=["\\Seen"], internaldate=T0 + 5000,
                      unique=f"{T0}.n5000")
    new.resync("alice@example.com")
    old.write_message("alice", "INBOX", message(5001), internaldate=T0 + 5001, unique=f"{T0}.o5001")  # a straggler
    old.resync("alice")
    (straggler,) = sync(old, new, accounts("alice"), tmp_path)  # also examines the new host's own message
    assert straggler.in_sync and straggler.total("copied") == 1
    old.write_message("alice", "INBOX", delivered, flags=["\\Seen"], internaldate=T0 + 5000, unique=f"{T0}.r5000")
    old.resync("alice")  # as the reverse sync leaves it on the old server
    (after,) = sync(old, new, accounts("alice"), tmp_path)
    assert after.in_sync and after.total("copied") == 0
    same(old, new, "alice")


def test_a_second_run_copies_only_new_mail_and_carries_flag_changes(servers, tmp_path):
    old, new = servers
    fill(old, "alice", 40)
    sync(old, new, accounts("alice"), tmp_path)
    fill(old, "alice", 6, start=1000, seed=3)  # mail that kept arriving at the old server
    client = old.client("alice")
    try:
        client.select("INBOX")
        client.uid("STORE", "1:2", "+FLAGS", "(\\Seen \\Answered)")
        client.uid("STORE", "3", "-FLAGS", "($Forwarded)")
    finally:
        client.logout()
    (second,) = sync(old, new, accounts("alice"), tmp_path)
    assert second.in_sync and second.total("copied") == 6 + 1  # 1006 is a duplicated message
    assert second.total("flag_updates") >= 2
    same(old, new, "alice")
    (third,) = sync(old, new, accounts("alice"), tmp_path)
    assert (third.total("copied"), third.total("flag_updates")) == (0, 0)
    assert third.total("skipped") == old.snapshot("alice").message_count()


def test_a_lost_state_file_does_not_duplicate_anything(servers, tmp_path):
    old, new = servers
    fill(old, "alice", 40)
    sync(old, new, accounts("alice"), tmp_path)
    shutil.rmtree(tmp_path / "state")
    (again,) = sync(old, new, accounts("alice"), tmp_path)
    assert again.in_sync and again.total("copied") == 0, again.to_dict()
    same(old, new, "alice")


def test_folder_rules_rename_include_exclude_and_since(servers, tmp_path):
    old, new = servers
    fill(old, "alice", 36)
    rules = FolderRules(include=("*",), exclude=("Trash", "Archive/*"), renames=(("Sent Items", "Sent/Outlook"),))
    cutoff = datetime.fromtimestamp(T0 + 18 * 3600, timezone.utc).date() + timedelta(days=1)
    (result,) = sync(old, new, accounts("alice"), tmp_path, rules=rules, since=cutoff)
    assert result.in_sync, result.errors
    target = new.snapshot("alice@example.com")
    assert set(target.folders) == {"INBOX", "Sent", "Sent/Outlook"}
    source = old.snapshot("alice")
    for name, mapped in (("INBOX", "INBOX"), ("Sent", "Sent"), ("Sent Items", "Sent/Outlook")):
        expected = {k: v for k, v in source.folders[name].items() if k[2] >= _epoch(cutoff)}
        assert target.folders[mapped] == expected and expected


def _epoch(day) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())


def test_tls_to_both_servers_with_a_cafile(servers, tmp_path):
    old, new = servers
    fill(old, "bob", 12)
    bundle = tmp_path / "ca.pem"
    bundle.write_text(old.cert.read_text() + new.cert.read_text())
    (result,) = sync(old, new, accounts("bob"), tmp_path, source=Endpoint("imaps", OLD, 993, str(bundle)),
                     target=Endpoint("imaps", NEW, 993, str(bundle)))
    assert result.in_sync, result.errors
    same(old, new, "bob")
    (untrusted,) = sync(old, new, accounts("bob"), tmp_path, source=Endpoint("imaps", OLD, 993, None))
    assert not untrusted.in_sync and "certificate" in untrusted.error
    # One TLS context serves every connection of a run, but a CA file written again is read again.
    assert tls_context(str(bundle)) is tls_context(str(bundle))
    first = tls_context(str(bundle))
    bundle.write_text(new.cert.read_text())
    assert tls_context(str(bundle)) is not first
    (rewritten,) = sync(old, new, accounts("bob"), tmp_path, source=Endpoint("imaps", OLD, 993, str(bundle)))
    assert not rewritten.in_sync and "certificate" in rewritten.error


# ------------------------------------------------------------------ faults


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_connections_cut_at_random_points_lose_and_duplicate_nothing(servers, tmp_path, seed):
    old, new = servers
    fill(old, "alice", 120, seed=seed, big=3)
    fill(old, "bob", 60, seed=seed + 10)
    with CuttingProxy((OLD, 1143), (OLD, 143), cuts=4, seed=seed) as to_old, \
            CuttingProxy((NEW, 1143), (NEW, 143), cuts=4, seed=seed + 100) as to_new:
        first = sync(old, new, accounts("alice", "bob"), tmp_path, source=Endpoint("imap", OLD, 1143),
                     target=Endpoint("imap", NEW, 1143), jobs=2, retries=2, batch_count=20)
        assert to_old.made + to_new.made == 8  # every cut was made
        assert sum(r.retries for r in first) > 0
        second = sync(old, new, accounts("alice", "bob"), tmp_path, source=Endpoint("imap", OLD, 1143),
                      target=Endpoint("imap", NEW, 1143), jobs=2)
    assert all(r.in_sync for r in second), [r.errors for r in second]
    same(old, new, "alice")
    same(old, new, "bob")


# ------------------------------------------------------------------ bad input, through the command


def write_accounts(path: Path, rows: list[str]) -> Path:
    path.write_text("source_user,source_password,target_user,target_password\n" + "\n".join(rows) + "\n")
    return path


def run_cli(tmp_path, *args):
    return CliRunner().invoke(app, ["sync", "--source", f"imap://{OLD}", "--target", f"imap://{NEW}",
                                    "--state-dir", str(tmp_path / "state"), *args])


def test_the_command_reports_json_and_exits_0_when_every_mailbox_is_in_sync(servers, tmp_path):
    old, new = servers
    fill(old, "alice", 10)
    path = write_accounts(tmp_path / "a.csv", ["alice,old-a,alice@example.com,new-a"])
    dry = run_cli(tmp_path, "--accounts", str(path), "--dry-run", "--json")
    assert dry.exit_code == 3
    report = json.loads(dry.stdout)
    assert report["dry_run"] and report["mailboxes"][0]["copied"] == old.snapshot("alice").message_count()
    assert new.snapshot("alice@example.com").message_count() == 0  # a dry run changes nothing
    done = run_cli(tmp_path, "--accounts", str(path), "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["in_sync"] is True
    assert "old-a" not in done.output and "new-a" not in done.output
    same(old, new, "alice")


def test_bad_mailboxes_are_reported_each_with_its_reason_and_the_others_synced(servers, tmp_path):
    old, new = servers
    fill(old, "alice", 10)
    fill(old, "bob", 10, seed=4)
    fill(old, "carol", 20, seed=5, big=1)  # over carol's 40K quota on the new server
    path = write_accounts(tmp_path / "a.csv", [
        "alice,old-a,alice@example.com,new-a",
        "bob,WRONG,bob@example.com,new-b",
        "carol,old-c,carol@example.com,new-c",
        "dave,only-three-fields,dave@example.com",
    ])
    result = run_cli(tmp_path, "--accounts", str(path))
    assert result.exit_code == 1  # the accounts file has a problem: that outranks "not in sync"
    output = result.output
    assert f"accounts: {path}:5: expected 4 fields, found 3" in output
    assert "bob -> bob@example.com: " in output and "source" in output and "authentication failed" in output.lower()
    assert "carol -> carol@example.com: " in output and "over quota" in output
    assert "WRONG" not in output and "old-c" not in output
    same(old, new, "alice")


def test_a_target_that_refuses_the_login_is_that_mailbox_s_error_and_the_others_are_synced(servers, tmp_path):
    old, new = servers
    fill(old, "alice", 5)
    fill(old, "bob", 5, seed=4)
    # alice's source login succeeds, her target's (made at the same time) is refused: the source session is hung up
    path = write_accounts(tmp_path / "a.csv", ["alice,old-a,alice@example.com,WRONG-T", "bob,old-b,bob@example.com,new-b"])
    result = run_cli(tmp_path, "--accounts", str(path))
    assert result.exit_code == 3
    (refused,) = [line for line in result.output.splitlines() if line.startswith("alice -> alice@example.com: ")]
    assert f"target imap://{NEW}:143: login as 'alice@example.com' refused" in refused and "WRONG-T" not in result.output
    assert new.snapshot("alice@example.com").message_count() == 0
    same(old, new, "bob")


def test_a_missing_folder_asked_for_is_an_error_of_that_mailbox(servers, tmp_path):
    old, new = servers
    fill(old, "alice", 6)
    path = write_accounts(tmp_path / "a.csv", ["alice,old-a,alice@example.com,new-a"])
    result = run_cli(tmp_path, "--accounts", str(path), "--include", "INBOX", "--include", "Projects")
    assert result.exit_code == 3
    assert "alice -> alice@example.com: Projects: no such folder on the source" in result.output
    assert set(new.snapshot("alice@example.com").folders) == {"INBOX"}


def test_an_unreadable_accounts_file_changes_nothing(servers, tmp_path):
    old, new = servers
    fill(old, "alice", 3)
    path = tmp_path / "a.csv"
    path.write_text("user,password\nalice,old-a\n")
    result = run_cli(tmp_path, "--accounts", str(path))
    assert result.exit_code == 1
    assert "the header must be exactly source_user,source_password,target_user,target_password" in result.output
    assert new.snapshot("alice@example.com").message_count() == 0


def test_the_stack_mode_records_the_final_sync_for_the_decommission_gate(servers, tmp_path, monkeypatch):
    old, new = servers
    fill(old, "alice", 5)
    project = tmp_path / "project"
    shutil.copytree(PROJECT / "stacks", project / "stacks", ignore=shutil.ignore_patterns("evidence"))
    shutil.copy(PROJECT / "Pulumi.yaml", project)
    (project / "stacks/mailboxes/dev.csv").write_text(
        (PROJECT / "stacks/mailboxes/dev.csv").read_text() + "alice@example.com,Alice,1G,imap,,generate\n")
    monkeypatch.chdir(project)
    path = write_accounts(tmp_path / "a.csv", ["alice,old-a,alice@example.com,new-a"])
    first = run_cli(tmp_path, "-s", "dev", "--accounts", str(path))
    assert first.exit_code == 0, first.output
    evidence = json.loads((project / "stacks/evidence/dev.json").read_text())
    assert evidence["final_sync"]["differences"] == old.snapshot("alice").message_count()
    again = run_cli(tmp_path, "-s", "dev", "--accounts", str(path))
    assert again.exit_code == 0
    assert json.loads((project / "stacks/evidence/dev.json").read_text())["final_sync"]["differences"] == 0
    stranger = write_accounts(tmp_path / "b.csv", ["bob,old-b,bob@example.com,new-b"])
    refused = run_cli(tmp_path, "-s", "dev", "--accounts", str(stranger))
    assert refused.exit_code == 1 and "target_user 'bob@example.com' is not in the stack's roster" in refused.output
