"""The sync state file: private, and it records what was received (its size) per copied message."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mailstack.imap import FolderStatus
from mailstack.sync.plan import FolderMark, FolderState
from mailstack.sync.state import SyncState


def test_state_files_are_0600_in_0700_directories(tmp_path: Path):
    path = tmp_path / "state" / "deep" / "x.sqlite"
    state = SyncState(path)
    state.record("INBOX", FolderState(1, 1), [(1, 10, frozenset({"\\Seen"}))])
    state.close()
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert path.parent.stat().st_mode & 0o777 == 0o700
    made = [p for p in path.parent.iterdir()]
    assert made and all(p.stat().st_mode & 0o777 == 0o600 for p in made), [(p.name, oct(p.stat().st_mode)) for p in made]


def earlier_version(path: Path, columns: str, row: str) -> Path:
    """A state file as an earlier version made it: its messages table with ``columns`` besides the first four,
    holding ``row``."""
    with sqlite3.connect(path) as db:
        db.executescript(f"CREATE TABLE messages (source TEXT, source_uid INTEGER, target_uid INTEGER, flags TEXT, "
                         f"{columns}PRIMARY KEY (source, source_uid)) WITHOUT ROWID; INSERT INTO messages VALUES ({row});")
    return path


def test_a_state_file_of_an_earlier_version_is_made_private_and_gains_the_received_columns(tmp_path: Path):
    path = earlier_version(tmp_path / "old.sqlite", "", "'INBOX', 1, 10, '\\Seen'")
    path.chmod(0o644)
    state = SyncState(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert state.received("INBOX") == {1: None}
    state.close()


def test_a_state_file_that_kept_digests_is_still_written_and_read(tmp_path: Path):
    path = earlier_version(tmp_path / "digests.sqlite", "size INTEGER, digest TEXT, ",
                           "'INBOX', 1, 10, '\\Seen', 20, 'ab12'")
    state = SyncState(path)
    state.record("INBOX", FolderState(1, 1), [(1, 10, frozenset()), (2, 11, frozenset())], {2: 30})
    assert state.received("INBOX") == {1: 20, 2: 30}
    assert state.load("INBOX").synced == {1: (10, frozenset()), 2: (11, frozenset())}
    state.close()


def test_what_was_received_is_recorded_and_kept_when_flags_change(tmp_path: Path):
    state = SyncState(tmp_path / "s.sqlite")
    folder = FolderState(1, 1)
    body = b"Subject: x\r\n\r\nbody\r\n"
    state.record("INBOX", folder, [(5, 50, frozenset())], {5: len(body)})
    state.record("INBOX", folder, [(5, 50, frozenset({"\\Seen"}))])  # a flag change later
    assert state.received("INBOX") == {5: len(body)}
    assert state.load("INBOX").synced == {5: (50, frozenset({"\\Seen"}))}
    state.close()


def test_the_marks_of_a_complete_run_are_kept_and_read_without_the_messages(tmp_path: Path):
    state = SyncState(tmp_path / "s.sqlite")
    folder = FolderState(1, 7)
    state.record("INBOX", folder, [(uid, uid + 100, frozenset({"\\Seen"})) for uid in range(1, 6)])
    folder.complete = FolderMark(FolderStatus(1, 6, 5, 900), FolderStatus(7, 106, 5, None), 1_700_000_000)
    state.save("INBOX", folder)
    state.close()
    reopened = SyncState(tmp_path / "s.sqlite")
    marks = reopened.load_marks("INBOX")
    assert marks.complete == folder.complete and marks.synced == {}
    loaded = reopened.load("INBOX")
    assert loaded.complete == folder.complete and len(loaded.synced) == 5
    assert len({id(flags) for _, flags in loaded.synced.values()}) == 1  # one set of flags, shared
    reopened.close()


def test_a_state_file_without_the_target_marks_has_no_complete_run(tmp_path: Path):
    """A file of the version that recorded only the source: its folders are listed once, then skipped."""
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript("CREATE TABLE folders (source TEXT PRIMARY KEY, source_uidvalidity INTEGER, "
                         "target_uidvalidity INTEGER, target_seen INTEGER, done_validity INTEGER, done_next INTEGER, "
                         "done_modseq INTEGER, done_since INTEGER, done INTEGER DEFAULT 0);"
                         "INSERT INTO folders VALUES ('INBOX', 1, 7, 10, 1, 11, 900, NULL, 1);")
    state = SyncState(path)
    marks = state.load_marks("INBOX")
    assert (marks.source_uidvalidity, marks.target_uidvalidity, marks.target_seen) == (1, 7, 10)
    assert marks.complete is None
    state.close()
