"""A re-sync with nothing to do skips what is unchanged, and never what changed on the source (real Dovecot, which
offers CONDSTORE): new mail, an expunge, a flag change; a change made only on the target is left alone unlisted,
and a folder made again there is copied again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.imap.endpoint import Endpoint
from mailstack.local.imapserver import DovecotImap, User
from mailstack.sync.accounts import Account
from mailstack.sync.engine import SyncOptions, run_sync
from tests.conftest import require_imap_servers

pytestmark = pytest.mark.integration

OLD, NEW = "127.0.42.31", "127.0.42.32"
FOLDERS = ("INBOX", "Sent", "Archive")
T0 = 1_700_000_000


@pytest.fixture(scope="module")
def servers():
    require_imap_servers()
    with DovecotImap(OLD, [User(u, f"old-{u}") for u in USERS]) as old, \
            DovecotImap(NEW, [User(u, f"new-{u}") for u in USERS]) as new:
        yield old, new


USERS = [f"u{n}" for n in range(16)]
_unused = iter(USERS)


@pytest.fixture
def mailbox(servers):
    """A user of its own for each test, its three folders filled with four messages each."""
    old, _ = servers
    user = next(_unused)
    for folder in FOLDERS[1:]:
        old.create_folder(user, folder)
    for n in range(12):
        body = message(user, n)
        old.write_message(user, FOLDERS[n % 3], body, flags=["\\Seen"], internaldate=T0 + n, unique=f"{T0 + n}.{n}")
    old.resync(user)
    return user


def message(user: str, n: int) -> bytes:
    return f"From: a@example.org\r\nSubject: m{n}\r\nMessage-ID: <{n}.{user}@example.org>\r\n\r\nbody {n}\r\n".encode()


def add(server: DovecotImap, user: str, folder: str, n: int) -> None:
    """A message delivered to a folder, as a client or the mail server puts it there (APPEND)."""
    client = server.client(user)
    try:
        client.append(folder, "(\\Seen)", T0 + n, message(user, n))
    finally:
        client.logout()


def sync(user: str, tmp_path: Path, **options):
    (result,) = run_sync([Account(user, f"old-{user}", user, f"new-{user}")], Endpoint("imap", OLD, 143),
                         Endpoint("imap", NEW, 143), SyncOptions(state_dir=tmp_path / "state", **options))
    assert result.in_sync, result.errors
    return result


def unchanged(result) -> dict[str, bool]:
    return {name: folder.unchanged for name, folder in result.folders.items()}


def store(server: DovecotImap, user: str, folder: str, *args: str) -> None:
    client = server.client(user)
    try:
        client.select(folder)
        client.uid(*args)
        if args[0] == "STORE" and "\\Deleted" in args[-1]:
            client.expunge()
    finally:
        client.logout()


def test_an_untouched_mailbox_is_skipped_folder_by_folder_and_the_report_says_so(servers, mailbox, tmp_path):
    old, new = servers
    first = sync(mailbox, tmp_path)
    assert first.total("copied") == 12 and not any(unchanged(first).values())
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(f"source_user,source_password,target_user,target_password\n"
                        f"{mailbox},old-{mailbox},{mailbox},new-{mailbox}\n")
    again = CliRunner().invoke(app, ["sync", "--source", f"imap://{OLD}", "--target", f"imap://{NEW}", "--accounts",
                                     str(accounts), "--state-dir", str(tmp_path / "state"), "--json"])
    assert again.exit_code == 0, again.output
    (report,) = json.loads(again.stdout)["mailboxes"]
    assert report["copied"] == 0 and report["skipped"] == 12 and report["folders_unchanged"] == 3
    assert {f["folder"]: f["unchanged"] for f in report["folders"]} == {f: True for f in FOLDERS}
    assert new.snapshot(mailbox).folders == old.snapshot(mailbox).folders


def make(change: str, server: DovecotImap, mailbox: str, folder: str, *, first: int, flagged: tuple[str, str]) -> None:
    """One change to ``folder``: new mail (numbered from ``first``), message 1 expunged, or ``flagged``'s message
    given its flags (sequence number, flag list)."""
    if change == "new mail":
        add(server, mailbox, folder, first)
    elif change == "expunge":
        store(server, mailbox, folder, "STORE", "1", "+FLAGS.SILENT", "(\\Deleted)")
    else:
        store(server, mailbox, folder, "STORE", flagged[0], "+FLAGS.SILENT", flagged[1])


@pytest.mark.parametrize("change", ["new mail", "expunge", "flag"])
def test_a_folder_changed_on_the_source_is_synced_and_only_it(servers, mailbox, tmp_path, change):
    old, new = servers
    sync(mailbox, tmp_path)
    make(change, old, mailbox, "Sent", first=100, flagged=("2", "(\\Flagged $Important)"))
    again = sync(mailbox, tmp_path)
    assert unchanged(again) == {"INBOX": True, "Sent": False, "Archive": True}
    assert again.total("copied") == (change == "new mail") and again.total("flag_updates") == (change == "flag")
    if change != "expunge":  # nothing is ever deleted on the target
        assert new.snapshot(mailbox).folders == old.snapshot(mailbox).folders
    assert all(unchanged(sync(mailbox, tmp_path)).values())  # the next run finds it as this one left it


@pytest.mark.parametrize("change", ["new mail", "expunge", "flag"])
def test_a_folder_changed_only_on_the_target_is_not_listed_and_the_change_is_left_alone(servers, mailbox, tmp_path,
                                                                                        change):
    """After the MX change every INBOX gets new mail on the new server: a re-sync must not list the old one's for it."""
    old, new = servers
    sync(mailbox, tmp_path)
    make(change, new, mailbox, "Archive", first=200, flagged=("1", "(\\Answered)"))
    changed = new.snapshot(mailbox).folders
    again = sync(mailbox, tmp_path)
    assert all(unchanged(again).values())
    assert again.total("copied") == 0 and again.total("flag_updates") == 0
    assert new.snapshot(mailbox).folders == changed  # the user's change there is kept as it is
    add(old, mailbox, "Archive", 201)  # then mail reaches the old server too
    after = sync(mailbox, tmp_path)
    assert unchanged(after) == {"INBOX": True, "Sent": True, "Archive": False} and after.total("copied") == 1
    assert after.total("flag_updates") == 0


@pytest.mark.parametrize("remade", [False, True], ids=["deleted", "deleted and made again"])
def test_a_folder_deleted_on_the_target_is_copied_again_whole(servers, mailbox, tmp_path, remade):
    old, new = servers
    sync(mailbox, tmp_path)
    client = new.client(mailbox)
    try:
        assert client.delete("Archive")[0] == "OK"
        if remade:
            assert client.create("Archive")[0] == "OK"
    finally:
        client.logout()
    again = sync(mailbox, tmp_path)
    assert unchanged(again) == {"INBOX": True, "Sent": True, "Archive": False} and again.total("copied") == 4
    assert new.snapshot(mailbox).folders == old.snapshot(mailbox).folders
    assert all(unchanged(sync(mailbox, tmp_path)).values())


def test_verify_still_compares_every_folder_after_an_unchanged_run(servers, mailbox, tmp_path):
    old, new = servers
    sync(mailbox, tmp_path)
    assert all(unchanged(sync(mailbox, tmp_path)).values())
    checked = sync(mailbox, tmp_path, verify=True)
    assert not any(unchanged(checked).values()) and checked.total("flags_repaired") == 0


def test_the_reverse_sync_skips_and_copies_back_as_the_forward_one(servers, mailbox, tmp_path):
    old, new = servers
    sync(mailbox, tmp_path)
    add(new, mailbox, "INBOX", 300)  # delivered to the new host after the cutover, then rolled back
    reverse = tmp_path / "reverse"
    (back,) = run_sync([Account(mailbox, f"new-{mailbox}", mailbox, f"old-{mailbox}")], Endpoint("imap", NEW, 143),
                       Endpoint("imap", OLD, 143), SyncOptions(state_dir=reverse))
    assert back.in_sync and back.total("copied") == 1
    (again,) = run_sync([Account(mailbox, f"new-{mailbox}", mailbox, f"old-{mailbox}")], Endpoint("imap", NEW, 143),
                        Endpoint("imap", OLD, 143), SyncOptions(state_dir=reverse))
    assert again.in_sync and again.total("copied") == 0 and all(unchanged(again).values())
    assert new.snapshot(mailbox).folders == old.snapshot(mailbox).folders
