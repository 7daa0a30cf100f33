"""The file formats and decisions of `mailstack backup` and `mailstack import`, without a server."""

from __future__ import annotations

import mailbox
from pathlib import Path

import pytest

from mailstack.sync.backup import (
    MAPPED_PREFIX,
    BackupBusy,
    BackupIndex,
    MaildirFolder,
    assign_letters,
    fingerprint,
    folder_path,
    keywords_of,
    mailbox_dir,
    maildir_folder,
    maildir_info,
    mbox_entry,
    mbox_file,
    message_epoch,
    status_headers,
)
from mailstack.imap import Message, utf7
from mailstack.sync.importer import from_line_date, message_key, prepare, pst_folders

T0 = 1_700_000_000  # Tue Nov 14 22:13:20 2023 UTC
BODY = b"From: a@example.org\r\nSubject: hi\r\n\r\nline one\r\nFrom here on\r\n"


def test_maildir_folders_are_maildirplusplus_names_in_modified_utf7():
    assert maildir_folder("INBOX") == ""
    assert maildir_folder("Archive/2024") == ".Archive.2024"
    assert maildir_folder("Entwürfe") == ".Entw&APw-rfe"
    assert maildir_folder("v1.2") == ".v1&AC4-2"  # a dot is the Maildir++ separator
    assert utf7.decode(maildir_folder("v1.2")[1:]) == "v1.2"


def test_mbox_files_and_parent_directories_never_clash():
    assert mbox_file("INBOX") == Path("INBOX.mbox")
    assert mbox_file("Archive/2024") == Path("Archive.sbd/2024.mbox")
    assert mbox_file("X") != mbox_file("X.mbox/child").parent
    assert mbox_file("..") == Path("...mbox")


def test_a_mailbox_directory_cannot_leave_the_backup_root():
    root = Path("/backup")
    assert mailbox_dir(root, "alice@example.com") == root / "alice@example.com"
    assert mailbox_dir(root, "../etc") == root / "%2E.%2Fetc"
    assert mailbox_dir(root, "a/b").parent == root


def test_maildir_info_has_system_flags_then_keyword_letters_in_ascii_order():
    letters, dropped = assign_letters({"$Forwarded": "a"}, ["Project-X", "$Forwarded"])
    assert (letters, dropped) == ({"$Forwarded": "a", "Project-X": "b"}, [])
    assert maildir_info({"\\Seen", "\\Answered", "\\Flagged", "Project-X", "$Forwarded"}, letters) == "2,FRSab"
    assert maildir_info(set(), letters) == "2,"


def test_keywords_beyond_the_26_maildir_letters_are_reported_not_saved():
    letters, _ = assign_letters({}, [f"k{n:02d}" for n in range(26)])
    more, dropped = assign_letters(letters, ["k99"])
    assert more == letters and dropped == ["k99"]


def test_an_mbox_entry_carries_date_and_flags_and_reads_back_with_the_mailbox_module(tmp_path):
    entry = mbox_entry(BODY, {"\\Seen", "\\Flagged", "$Forwarded"}, T0)
    assert entry.startswith(b"From MAILER-DAEMON Tue Nov 14 22:13:20 2023\n")
    assert b"\r" not in entry and b"\n>From here on\n" in entry
    path = tmp_path / "x.mbox"
    path.write_bytes(entry + mbox_entry(b"Subject: no body", set(), T0))
    box = mailbox.mbox(str(path))
    first, second = box[0], box[1]
    assert set(first.get_flags()) == set("ROF") and first["X-Keywords"] == "$Forwarded"
    assert first.get_payload() == "line one\n>From here on\n"
    assert second["Subject"] == "no body" and second.get_flags() == "O"


def test_an_mbox_message_is_prepared_with_its_flags_date_and_crlf_without_status_headers():
    prepared = prepare(b"From someone Tue Nov 14 22:13:20 2023\nSubject: x\nStatus: RO\nX-Status: AT\n"
                       b"X-Keywords: $Junk, bad\\one\n\nbody\n")
    assert prepared.body == b"Subject: x\r\n\r\nbody\r\n"
    assert prepared.flags == {"\\Seen", "\\Answered", "\\Draft", "$Junk"}
    assert prepared.internaldate == "14-Nov-2023 22:13:20 +0000"


def test_without_a_readable_from_line_the_date_header_dates_the_message():
    prepared = prepare(b"Subject: x\nDate: Thu, 16 Nov 2023 10:00:00 +0100\n\nbody\n")
    assert prepared.internaldate == "16-Nov-2023 10:00:00 +0100" and prepared.flags == frozenset()


def test_the_folder_data_message_of_an_imap_server_mbox_is_not_imported():
    assert prepare(b"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\nSubject: DON'T DELETE\nX-IMAP: 1 2\n\nx\n") is None


@pytest.mark.parametrize("line,expected", [
    ("From a@b Tue Nov 14 22:13:20 2023", "2023-11-14T22:13:20+00:00"),
    ("From a@b Mon Jan  1 09:05 2024", "2024-01-01T09:05:00+00:00"),
    ("From a@b Tue Nov 14 22:13:20 2023 +0100", "2023-11-14T22:13:20+01:00"),
    ("From a@b Tue Nov 14 22:13:20 CET 2023", "2023-11-14T22:13:20+00:00"),
    ("From a@b yesterday", None),
])
def test_from_line_dates(line, expected):
    parsed = from_line_date(line)
    assert (parsed.isoformat() if parsed else None) == expected


def test_messages_are_recognised_by_size_and_header_whatever_their_date():
    assert message_key(BODY) == message_key(bytes(BODY))
    assert message_key(BODY) != message_key(BODY.replace(b"hi", b"ho"))
    assert fingerprint(BODY, T0) != fingerprint(BODY, T0 + 1)


def test_pst_folders_leave_out_the_store_level_and_folders_without_mail(tmp_path):
    store = tmp_path / "Outlook Data File"
    for name in ["Inbox/1", "Inbox/2", "Inbox/10", "Inbox/Sub/1.eml", "Sent Items/1", "Inbox/1-attachment.bin"]:
        (store / name).parent.mkdir(parents=True, exist_ok=True)
        (store / name).write_bytes(b"x")
    (store / "Calendar").mkdir()
    found = [(parts, [p.name for p in files]) for parts, files in pst_folders(tmp_path)]
    assert found == [(("Inbox",), ["1", "2", "10"]), (("Inbox", "Sub"), ["1.eml"]), (("Sent Items",), ["1"])]


def test_the_index_remembers_uids_and_recognises_messages_after_a_uidvalidity_change(tmp_path):
    path = tmp_path / "index.jsonl"
    index = BackupIndex(path)
    with pytest.raises(BackupBusy):
        BackupIndex(path)
    index.record("INBOX", 7, [(1, "p1"), (2, "p2")])
    index.close()
    with open(path, "ab") as cut_short:
        cut_short.write(b'{"folder": "INBOX", "uidval')
    index = BackupIndex(path)
    assert index.saved("INBOX", 7) == {1, 2} and index.saved("INBOX", 8) == set()
    index.record("INBOX", 8, [(5, "p1")])
    assert index.saved_before("INBOX", 8) == {"p2": 1}
    index.close()
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("fmt", ["maildir", "mbox"])
@pytest.mark.parametrize("name", ["/", "", "..", "../../etc", "a/../../b", "//", "x" * 300, "a\0b", "\x1b]0;t\x07",
                                  "Archive/2024", "INBOX"])
def test_a_folder_is_saved_inside_its_mailbox_directory_whatever_its_name(fmt, name, tmp_path):
    where, mapped = folder_path(fmt, name)
    root = tmp_path / "mailbox"
    resolved = (root / where).resolve()
    assert resolved == root or root in resolved.parents
    assert all(len(part.encode()) <= 255 and "\0" not in part for part in where.parts)
    # Maildir names are modified UTF-7 (a NUL is "&AAA-"); mbox names are the folder's own.
    must_map = name == "x" * 300 or (fmt == "maildir" and name in ("/", "")) or (fmt == "mbox" and name == "a\0b")
    assert bool(mapped) == must_map, (where, mapped)
    if mapped:
        assert MAPPED_PREFIX in str(where) and folder_path(fmt, name) == (where, mapped)  # the same place every run


def test_inbox_alone_is_the_mailbox_directory_itself():
    assert folder_path("maildir", "INBOX") == (Path("."), "")
    assert folder_path("maildir", "")[1] == "the name would be the mailbox's own directory"


def message_at(date: str, body: bytes = BODY) -> Message:
    return Message(1, frozenset(), date, body)


def test_a_message_without_a_readable_date_gets_a_stable_one_and_says_which():
    assert message_epoch(message_at("14-Nov-2023 22:13:20 +0000")) == (T0, "")
    dated = BODY.replace(b"Subject", b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nSubject")
    assert message_epoch(message_at("", dated)) == (T0, "saved with the date of its Date header (no readable "
                                                        "INTERNALDATE)")
    assert message_epoch(message_at("", BODY.replace(b"Subject", b"Date: someday\r\nSubject")))[0] == 0
    assert message_epoch(message_at(""))[1] == ("saved with the date 1970-01-01 (no readable INTERNALDATE, no "
                                                 "readable Date header)")


def test_only_valid_keywords_reach_dovecot_keywords_and_mbox_headers():
    hostile = {"\\Seen", "$Ok", "x\nX1 DELETE INBOX", "{5}", "two words", "\\Bogus"}
    assert keywords_of(hostile) == ["$Ok"]
    assert status_headers(hostile) == b"Status: RO\nX-Keywords: $Ok\n"


def test_a_dovecot_keywords_file_with_lines_that_are_not_keywords_is_read_without_them(tmp_path):
    root = tmp_path / "mailbox"
    folder = MaildirFolder(root, Path(".Work"))
    (folder.path / "dovecot-keywords").write_text("0 $Ok\n1 two words\n2 {5}\n30 $Far\n")
    assert MaildirFolder(root, Path(".Work")).letters == {"$Ok": "a"}
