"""What earlier runs copied, per mailbox pair: a small SQLite file, committed after every batch.

It holds folder names, UIDs, flags, and the size of each message as
received, never a credential. It is private all the same (folder
names say much): files 0600 in 0700 directories. Losing it costs time, not
correctness: messages already on the target are recognised by their
fingerprint and not copied again.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

from mailstack.files import private_dir
from mailstack.imap import FolderStatus
from mailstack.sync.plan import FolderMark, FolderState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS folders (
  source TEXT PRIMARY KEY, source_uidvalidity INTEGER, target_uidvalidity INTEGER, target_seen INTEGER,
  done_validity INTEGER, done_next INTEGER, done_modseq INTEGER, done_since INTEGER, done INTEGER DEFAULT 0,
  done_messages INTEGER, done_target_validity INTEGER, done_target_next INTEGER, done_target_messages INTEGER,
  done_target_modseq INTEGER);
CREATE TABLE IF NOT EXISTS messages (
  source TEXT, source_uid INTEGER, target_uid INTEGER, flags TEXT, size INTEGER,
  PRIMARY KEY (source, source_uid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unpaired (
  source TEXT, target_uid INTEGER, PRIMARY KEY (source, target_uid)) WITHOUT ROWID;
"""
# Columns a state file of an earlier version lacks, added when it is opened.
_ADDED = {"messages": (("size", "INTEGER"),),
          "folders": tuple((c, "INTEGER") for c in ("done_messages", "done_target_validity", "done_target_next",
                                                    "done_target_messages", "done_target_modseq"))}
_FOLDER = ("source_uidvalidity, target_uidvalidity, target_seen, done_validity, done_next, done_modseq, done_since, "
           "done, done_messages, done_target_validity, done_target_next, done_target_messages, done_target_modseq")
# Files SQLite makes beside the database (it gives them the database's permissions).
_COMPANIONS = ("-wal", "-shm", "-journal")


def state_file(directory: Path, source: str, source_user: str, target: str, target_user: str) -> Path:
    """One file per (source mailbox, target mailbox); the name is a digest, so user names stay out of listings."""
    key = "\0".join((source, source_user, target, target_user)).encode()
    return directory / f"{hashlib.sha256(key).hexdigest()[:24]}.sqlite"


class SyncState:
    """The per-folder UID maps of one mailbox pair."""

    def __init__(self, path: Path):
        private_dir(path.parent)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        for name in (path.name, *(path.name + suffix for suffix in _COMPANIONS)):
            if (path.parent / name).exists():  # a file of an earlier version, made with the umask's mode
                os.chmod(path.parent / name, 0o600)
        # Opened and closed on a worker thread by the engine (creating and checkpointing a file waits on fsync),
        # used on the event loop's: one user at a time, never two threads at once.
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        for table, added in _ADDED.items():  # a state file of an earlier version
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for column, kind in added:
                if column not in columns:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        self._flag_sets: dict[str, frozenset[str]] = {}

    def close(self) -> None:
        self._db.close()

    def load(self, folder: str) -> FolderState:
        """A folder's whole state: its marks and every copied message's UIDs and flags."""
        state = self.load_marks(folder)
        state.synced = {uid: (target, self._flags(flags)) for uid, target, flags in self._db.execute(
            "SELECT source_uid, target_uid, flags FROM messages WHERE source = ?", (folder,))}
        state.unpaired = {uid for (uid,) in self._db.execute("SELECT target_uid FROM unpaired WHERE source = ?",
                                                             (folder,))}
        return state

    def load_marks(self, folder: str) -> FolderState:
        """A folder's state without its messages: enough to tell it is unchanged (one row, whatever its size)."""
        row = self._db.execute(f"SELECT {_FOLDER} FROM folders WHERE source = ?", (folder,)).fetchone()
        if row is None:
            return FolderState()
        complete = None
        if row[7] and None not in row[3:6] and None not in row[8:12]:  # an earlier version recorded no target
            complete = FolderMark(FolderStatus(row[3], row[4], row[8], row[5]),
                                  FolderStatus(row[9], row[10], row[11], row[12]), row[6])
        return FolderState(row[0], row[1], {}, row[2], complete=complete)

    def reset(self, folder: str, state: FolderState) -> None:
        """Start a folder afresh (UIDVALIDITY changed on a side)."""
        self._db.execute("DELETE FROM messages WHERE source = ?", (folder,))
        self._db.execute("DELETE FROM unpaired WHERE source = ?", (folder,))
        self.save(folder, state)

    def save(self, folder: str, state: FolderState) -> None:
        mark = state.complete
        done = ((mark.source.uidvalidity, mark.source.uidnext, mark.source.highestmodseq, mark.since, 1,
                 mark.source.messages, mark.target.uidvalidity, mark.target.uidnext, mark.target.messages,
                 mark.target.highestmodseq) if mark else (0, 0, 0, None, 0, None, None, None, None, None))
        self._db.execute(f"INSERT OR REPLACE INTO folders (source, {_FOLDER}) VALUES ({', '.join('?' * 14)})",
                         (folder, state.source_uidvalidity, state.target_uidvalidity, state.target_seen, *done))
        self._db.commit()

    def set_unpaired(self, folder: str, state: FolderState, uids: set[int]) -> None:
        """Replace the folder's target-only messages (see :attr:`FolderState.unpaired`)."""
        state.unpaired = set(uids)
        self._db.execute("DELETE FROM unpaired WHERE source = ?", (folder,))
        self._db.executemany("INSERT INTO unpaired VALUES (?, ?)", [(folder, uid) for uid in sorted(uids)])
        self.save(folder, state)

    def record(self, folder: str, state: FolderState, pairs: Iterable[tuple[int, int, frozenset[str]]],
               received: Mapping[int, int] | None = None) -> None:
        """Remember copied (or recognised, or re-flagged) messages, in memory and on disk, in one commit.

        ``received`` gives, per source UID, the size of the bytes copied; a
        message recorded again without it keeps what it had.
        """
        received = received or {}
        rows = []
        for source_uid, target_uid, flags in pairs:
            state.synced[source_uid] = (target_uid, flags)
            state.target_seen = max(state.target_seen, target_uid)
            rows.append((folder, source_uid, target_uid, _text(flags), received.get(source_uid)))
        self._db.executemany(
            "INSERT INTO messages (source, source_uid, target_uid, flags, size) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (source, source_uid) DO UPDATE SET target_uid = excluded.target_uid, "
            "flags = excluded.flags, size = coalesce(excluded.size, size)", rows)
        self.save(folder, state)

    def _flags(self, text: str) -> frozenset[str]:
        """The flags of a row; equal sets are one object (a folder has few combinations, and many messages)."""
        flags = self._flag_sets.get(text)
        if flags is None:
            flags = self._flag_sets[text] = frozenset(text.split()) if text else frozenset()
        return flags

    def received(self, folder: str) -> dict[int, int | None]:
        """Per source UID of a folder: the size of the bytes copied (None when not known)."""
        return dict(self._db.execute("SELECT source_uid, size FROM messages WHERE source = ?", (folder,)))


@lru_cache(maxsize=1024)
def _text(flags: frozenset[str]) -> str:
    """Flags as a row holds them; a folder has few sets of flags, each on many messages: kept."""
    return " ".join(sorted(flags))
