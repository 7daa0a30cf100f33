"""`mailstack backup` and `mailstack import` against real Dovecot servers on loopback (127.0.4.41-49).

What a user's client sees is the measure: a Maildir backup restored into
another Dovecot, or an mbox backup imported back, must show the same
folders, bytes, flags and dates as the source.
"""

from __future__ import annotations

import hashlib
import mailbox
import os
import shutil
import stat
import sys
from collections import Counter
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailstack.sync.backup import INDEX_NAME, maildir_folder, mbox_file, run_backup
from mailstack.local.imapserver import DovecotImap, User
from mailstack.sync.importer import run_import
from mailstack.problems import InputError
from mailstack.sync.accounts import Account
from mailstack.imap.endpoint import Endpoint
from tests.conftest import require_root_and_packages, require_tool

pytestmark = pytest.mark.integration

SOURCE, TARGET, NOBODY = "127.0.4.41", "127.0.4.42", "127.0.4.44"
FOLDERS = ["INBOX", "Archive/2024", "Entwürfe", "日本語/メール", "Sent"]
USERS = {"alice": "pw-alice", "bob": "pw-bob", "carol": "pw-carol", "dave": "pw-dave"}
T0 = 1_700_000_000
FLAG_SETS = [(), ("\\Seen",), ("\\Seen", "\\Answered"), ("\\Flagged",), ("\\Draft",), ("\\Seen", "\\Deleted")]


def message(n: int, *, message_id: bool = True) -> bytes:
    mail = EmailMessage()
    mail["From"] = f"sender{n % 3}@example.org"
    mail["To"] = "alice@example.com"
    mail["Subject"] = f"message {n} Grüße 日本語"
    mail["Date"] = "Tue, 14 Nov 2023 22:13:20 +0000"
    if message_id:
        mail["Message-ID"] = f"<{n}@example.org>"
    mail.set_content(f"body {n}\nzweite Zeile\n")
    return mail.as_bytes().replace(b"\n", b"\r\n")


def fill(server: DovecotImap, user: str, count: int, *, start: int = 0) -> None:
    """``count`` messages over every folder: flags, dates, some without Message-ID; keywords on two."""
    if start == 0:
        for folder in FOLDERS[1:]:
            server.create_folder(user, folder)
    for n in range(start, start + count):
        server.write_message(user, FOLDERS[n % len(FOLDERS)], message(n, message_id=n % 4 != 0),
                             flags=FLAG_SETS[n % len(FLAG_SETS)], internaldate=T0 + n * 3600, unique=f"{T0 + n}.m{n}")
    server.resync(user)
    if start == 0:
        client = server.client(user)
        try:  # keywords can only be set through IMAP
            client.select("INBOX")
            client.uid("STORE", "1:2", "+FLAGS", "($Forwarded Project-X)")
        finally:
            client.logout()


def account(user: str, password: str | None = None) -> Account:
    return Account(user, password or USERS[user], f"{user}@example.com", "unused")


@pytest.fixture(scope="module")
def source():
    require_root_and_packages()
    with DovecotImap(SOURCE, [User(name, password) for name, password in USERS.items()]) as server:
        fill(server, "alice", 24)
        fill(server, "bob", 6)
        yield server


@pytest.fixture(scope="module")
def target():
    require_root_and_packages()
    users = ["restored", "imported", "mboxer", "pster", "untouched"]
    with DovecotImap(TARGET, [User(name, f"pw-{name}") for name in users]) as server:
        yield server


SOURCE_SERVER = Endpoint("imap", SOURCE, 143)
TARGET_SERVER = Endpoint("imap", TARGET, 143)


def tree_modes(root: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in [root, *root.rglob("*")]}


def contains(root: Path, secret: bytes) -> bool:
    return any(secret in p.read_bytes() for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------- backup


def test_a_maildir_backup_restored_into_dovecot_is_the_same_mailbox(source, target, tmp_path):
    [result] = run_backup([account("alice")], SOURCE_SERVER, tmp_path / "backup")
    original = source.snapshot("alice")
    assert result.error is None
    assert (result.folders, result.written, result.present) == (len(FOLDERS), original.message_count(), 0)
    # The files hold exactly the bytes the server sent, and are private.
    files = [p for p in result.path.rglob("*") if p.parent.name == "cur"]
    assert Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in files) == Counter(
        digest for messages in original.folders.values() for (digest, _, _), n in messages.items() for _ in range(n))
    assert tree_modes(result.path) == {("dir", 0o700), ("file", 0o600)}
    assert not contains(result.path, USERS["alice"].encode())
    shutil.copytree(result.path, target.maildir("restored"), ignore=shutil.ignore_patterns(INDEX_NAME))
    target.resync("restored")
    assert target.snapshot("restored").folders == original.folders


def test_an_mbox_backup_imported_back_gives_the_same_mailbox(source, target, tmp_path):
    [result] = run_backup([account("alice")], SOURCE_SERVER, tmp_path / "backup", fmt="mbox")
    original = source.snapshot("alice")
    assert result.error is None and result.written == original.message_count()
    files = sorted(p.relative_to(result.path) for p in result.path.rglob("*.mbox"))
    assert files == sorted(mbox_file(f) for f in FOLDERS)
    assert tree_modes(result.path) == {("dir", 0o700), ("file", 0o600)}
    inbox = mailbox.mbox(result.path / "INBOX.mbox")
    assert len(inbox) == sum(original.folders["INBOX"].values())
    assert inbox[0].get_from() == "MAILER-DAEMON Tue Nov 14 22:13:20 2023"  # the INTERNALDATE
    assert (inbox[0].get_flags(), inbox[0]["X-Keywords"]) == ("O", "$Forwarded Project-X")
    assert set(inbox[1].get_flags()) == set("ROD")  # \Seen \Deleted
    for folder in FOLDERS:
        [back] = run_import([result.path / mbox_file(folder)], "mbox", TARGET_SERVER, "imported", "pw-imported", folder)
        assert back.error is None and back.copied == sum(original.folders[folder].values())
    assert target.snapshot("imported").folders == original.folders


@pytest.mark.parametrize("fmt,user", [("maildir", "carol"), ("mbox", "dave")])
def test_a_second_backup_writes_only_new_messages(source, tmp_path, fmt, user):
    fill(source, user, 10)
    to = tmp_path / "backup"
    [first] = run_backup([account(user)], SOURCE_SERVER, to, fmt=fmt)
    [again] = run_backup([account(user)], SOURCE_SERVER, to, fmt=fmt)
    assert (first.written, first.present, first.error) == (10, 0, None)
    assert (again.written, again.present, again.error) == (0, 10, None)

    fill(source, user, 2, start=10)
    [more] = run_backup([account(user)], SOURCE_SERVER, to, fmt=fmt)
    assert (more.written, more.present) == (2, 10)
    # A rebuilt server (new UIDVALIDITY): its messages are recognised by fingerprint, not saved again.
    source.doveadm("mailbox", "update", "-u", user, "--uid-validity", "4242", "INBOX")
    [rebuilt] = run_backup([account(user)], SOURCE_SERVER, to, fmt=fmt)
    assert (rebuilt.written, rebuilt.present, rebuilt.error) == (0, 12, None)

    counted = {folder: len(os.listdir(more.path / maildir_folder(folder) / "cur")) if fmt == "maildir"
               else len(mailbox.mbox(more.path / mbox_file(folder))) for folder in FOLDERS}
    assert counted == {f: sum(c.values()) for f, c in source.snapshot(user).folders.items()}


def test_a_refused_login_is_reported_while_other_mailboxes_are_saved(source, tmp_path):
    results = run_backup([account("alice", "not-the-password"), account("bob")], SOURCE_SERVER, tmp_path / "backup")
    assert [r.user for r in results] == ["alice", "bob"]
    assert "refused" in results[0].error and "not-the-password" not in results[0].error
    assert results[1].error is None and results[1].written == source.snapshot("bob").message_count()
    assert not (tmp_path / "backup" / "alice").exists()


def test_an_unreachable_server_is_reported_for_each_mailbox(tmp_path):
    results = run_backup([account("alice"), account("bob")], Endpoint("imap", NOBODY, 143), tmp_path / "backup", jobs=2)
    assert all("cannot connect" in r.error for r in results)


# ---------------------------------------------------------------- import


def mbox_text() -> bytes:
    """An mbox as UW-IMAP or Dovecot leaves it: an internal first message, Status headers, LF line ends."""
    return b"".join([
        b"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\n"
        b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\nX-IMAP: 1700000000 0000000004\n\ninternal\n\n",
        b"From alice@example.org Tue Nov 14 22:13:20 2023\n"
        b"From: alice@example.org\nSubject: read and answered\nMessage-ID: <1@example.org>\n"
        b"Status: RO\nX-Status: A\nX-Keywords: $Forwarded\n\nfirst\n\n",
        b"From bob@example.org Wed Nov 15 08:00:00 2023\n"
        b"From: bob@example.org\nSubject: =?utf-8?q?ohne_Message-ID_=C3=BC?=\nStatus: O\nX-Status: F\n\n"
        b"no message id\n>From the quoted line\n\n",
        b"From carol@example.org some junk the reader cannot date\n"
        b"From: carol@example.org\nSubject: dated by its header\nDate: Thu, 16 Nov 2023 10:00:00 +0100\n\nthird\n\n",
    ])


def expected(body: bytes, flags: tuple[str, ...], epoch: int) -> tuple[str, frozenset[str], int]:
    return hashlib.sha256(body.replace(b"\n", b"\r\n")).hexdigest(), frozenset(flags), epoch


def test_an_mbox_import_keeps_flags_and_dates_and_is_not_repeated(target, tmp_path):
    path = tmp_path / "old.mbox"
    path.write_bytes(mbox_text())
    [first] = run_import([path], "mbox", TARGET_SERVER, "mboxer", "pw-mboxer", "Imported/Ärchiv")
    assert (first.source, first.folder, first.copied, first.present, first.error) == (
        str(path), "Imported/Ärchiv", 3, 0, None)
    folder = target.snapshot("mboxer").folders["Imported/Ärchiv"]
    assert folder == Counter([
        expected(b"From: alice@example.org\nSubject: read and answered\nMessage-ID: <1@example.org>\n\nfirst\n",
                 ("\\Seen", "\\Answered", "$Forwarded"), T0),
        expected(b"From: bob@example.org\nSubject: =?utf-8?q?ohne_Message-ID_=C3=BC?=\n\n"
                 b"no message id\n>From the quoted line\n", ("\\Flagged",), 1_700_035_200),
        expected(b"From: carol@example.org\nSubject: dated by its header\nDate: Thu, 16 Nov 2023 10:00:00 +0100\n\n"
                 b"third\n", (), 1_700_125_200),
    ])
    [again] = run_import([path], "mbox", TARGET_SERVER, "mboxer", "pw-mboxer", "Imported/Ärchiv")
    assert (again.copied, again.present, again.error) == (0, 3, None)
    assert target.snapshot("mboxer").folders["Imported/Ärchiv"] == folder


PST_MESSAGE = (b"From: \"Pat\" <pat@example.org>\nTo: user@example.com\nSubject: {subject}\n"
               b"Date: Tue, 14 Nov 2023 22:13:20 +0000\n{status}Message-Id: <{n}@pst.example.org>\nMIME-Version: 1.0\n"
               b"Content-Type: multipart/mixed;\n\tboundary=\"--boundary-LibPST-iamunique-1_-_-\"\n\n"
               b"----boundary-LibPST-iamunique-1_-_-\nContent-Type: text/plain; charset=\"utf-8\"\n\n{subject}\n\n"
               b"----boundary-LibPST-iamunique-1_-_---\n\n")


def fake_readpst(tmp_path: Path) -> Path:
    """A stand-in for readpst, first on PATH: no freely licensed PST file could be obtained for the tests
    (readpst cannot write one), so this writes the tree ``readpst -M`` writes (a directory named after the
    message store, one per folder, messages as files 1, 2, ...; LF line ends; "Status: RO" for read mail;
    empty directories for the calendar and contacts), and fails like readpst on a file that is not a PST.
    The real readpst is used by the test of a corrupt file."""
    tree = tmp_path / "tree" / "Outlook Data File"
    for folder, n, subject, status in [("Inbox", 1, b"hello", b"Status: RO\n"), ("Inbox", 2, b"unread", b""),
                                       ("Inbox/Projekte Ü", 1, b"nested", b"Status: RO\n"),
                                       ("Sent Items", 1, b"sent", b"Status: RO\n")]:
        (tree / folder).mkdir(parents=True, exist_ok=True)
        (tree / folder / str(n)).write_bytes(PST_MESSAGE.replace(b"{subject}", subject)
                                             .replace(b"{status}", status).replace(b"{n}", str(n).encode()))
    (tree / "Calendar").mkdir()
    (tree / "Contacts").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "readpst"
    script.write_text(f"""#!{sys.executable}
import shutil, sys
args = sys.argv[1:]
assert "-M" in args and "-o" in args, args
with open(args[-1], "rb") as pst:
    if pst.read(4) != b"!BDN":
        print("Error opening File")
        sys.exit(1)
shutil.copytree({str(tmp_path / "tree")!r}, args[args.index("-o") + 1], dirs_exist_ok=True)
""")
    script.chmod(0o755)
    return bin_dir


def test_a_pst_import_keeps_its_folders_under_the_given_one(target, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_readpst(tmp_path)}:{os.environ['PATH']}")
    pst = tmp_path / "archive.pst"
    pst.write_bytes(b"!BDN" + bytes(508))
    results = run_import([pst], "pst", TARGET_SERVER, "pster", "pw-pster", "PST")
    assert [(r.folder, r.copied, r.error) for r in results] == [
        ("PST/Inbox", 2, None), ("PST/Inbox/Projekte Ü", 1, None), ("PST/Sent Items", 1, None)]
    folders = target.snapshot("pster").folders
    assert {name for name in folders if name.startswith("PST")} == {
        "PST/Inbox", "PST/Inbox/Projekte Ü", "PST/Sent Items"}  # no Calendar, no Contacts: they hold no mail
    assert sorted(flags for (_, flags, _) in folders["PST/Inbox"]) == [frozenset(), frozenset({"\\Seen"})]
    assert {date for (_, _, date) in folders["PST/Inbox"]} == {T0}  # from the Date header
    again = run_import([pst], "pst", TARGET_SERVER, "pster", "pw-pster", "PST")
    assert [(r.copied, r.present) for r in again] == [(0, 2), (0, 1), (0, 1)]


def test_a_file_that_is_not_an_mbox_is_refused_before_anything_is_imported(target, tmp_path):
    good, bad = tmp_path / "good.mbox", tmp_path / "notes.txt"
    good.write_bytes(mbox_text())
    bad.write_text("Dear diary,\n")
    before = target.snapshot("untouched")
    with pytest.raises(InputError) as raised:
        run_import([good, bad], "mbox", TARGET_SERVER, "untouched", "pw-untouched", "INBOX")
    assert [p.where for p in raised.value.problems] == [str(bad)]
    assert "not an mbox" in raised.value.report()
    assert target.snapshot("untouched") == before


def test_a_missing_readpst_names_the_package_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    pst = tmp_path / "archive.pst"
    pst.write_bytes(b"!BDN")
    with pytest.raises(InputError, match="apt-get install pst-utils"):
        run_import([pst], "pst", TARGET_SERVER, "untouched", "pw-untouched", "Imported")


def test_a_corrupt_pst_is_refused_by_the_real_readpst(target, tmp_path):
    require_tool("readpst")
    pst = tmp_path / "broken.pst"
    pst.write_bytes(b"!BDN" + os.urandom(2000))
    before = target.snapshot("untouched")
    with pytest.raises(InputError) as raised:
        run_import([pst], "pst", TARGET_SERVER, "untouched", "pw-untouched", "Imported")
    assert [p.where for p in raised.value.problems] == [str(pst)]
    assert "readpst cannot read it" in raised.value.report()
    assert target.snapshot("untouched") == before


def test_an_import_with_a_refused_login_reports_it_without_the_password(target, tmp_path):
    path = tmp_path / "old.mbox"
    path.write_bytes(mbox_text())
    [result] = run_import([path], "mbox", TARGET_SERVER, "untouched", "wrong-secret", "INBOX")
    assert "refused" in result.error and "wrong-secret" not in result.error and result.copied == 0
