"""A hostile old server (tests/hostile_imap.py) against `mailstack sync` and `mailstack backup`, one behaviour each.

Each test runs the real command in a child process, against a real Dovecot
as the new server, with a well-behaved mailbox of the same old server in the
same run. It asserts that the hostile mailbox's target gets only what it
should (nothing deleted, no injected command), that the other mailboxes are
untouched or exactly synced, that the report names the problem (and shows
no terminal escape), and that the child's memory stays under a bound: the
peak RSS above what the command had once imported, measured and printed.
"""

from __future__ import annotations

import hashlib
import imaplib
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailstack.imap.wire import internaldate_epoch
from mailstack.local.imapserver import DovecotImap, User, _snapshot
from mailstack.sync.state import state_file
from tests.conftest import require_imap_servers
from tests.hostile_imap import DATE, MODES, PASSWORD, Behaviour, Box, HostileImap, Inject, Mail, Names, calm, mail

pytestmark = pytest.mark.integration

OLD, NEW = "127.0.10.1", "127.0.10.2"
T0 = 1_700_000_000
MB = 1024 * 1024
FIGURES: dict[str, float] = {}

# The command in a child process: its peak resident memory above what it held once imported, on stderr.
# (VmHWM, not ru_maxrss: after fork and exec, ru_maxrss also counts the parent's pages the child once shared.)
CHILD = """
import json, sys
import mailstack.cli, mailstack.sync.engine, mailstack.sync.backup, mailstack.sync.report
def kb(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))
start = kb("VmRSS")
def peak():
    print("MEMORY " + json.dumps({"start_kb": start, "peak_kb": kb("VmHWM")}), file=sys.stderr)
import atexit; atexit.register(peak)
sys.argv = ["mailstack", *sys.argv[1:]]
mailstack.cli.main()
"""


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    peak_mb: float

    @property
    def report(self) -> dict:
        return json.loads(self.out)

    def mailbox(self, user: str) -> dict:
        return next(m for m in self.report["mailboxes"] if m["source_user"] == user)


@pytest.fixture(scope="module")
def servers(request):
    """The hostile old server, and a Dovecot new server with a victim and a calm target per mode and a bystander."""
    require_imap_servers()
    users = [User(f"{kind}-{mode}@example.com", "new") for mode in MODES for kind in ("victim", "calm")]
    with HostileImap(OLD) as old, DovecotImap(NEW, users + [User("bystander@example.com", "new")]) as new:
        for user in [u.name for u in users if u.name.startswith("victim")] + ["bystander@example.com"]:
            for folder in ("Important", "Trash"):
                new.create_folder(user, folder)
            for n, folder in enumerate(["INBOX", "Important", "Important", "Trash", "Trash"]):
                new.write_message(user, folder, mail(900 + n), flags=["\\Seen"], internaldate=T0 + n,
                                  unique=f"{T0 + n}.pre{n}")
            new.resync(user)
        yield old, new
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter and capture and FIGURES:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            for mode, figure in FIGURES.items():
                reporter.write_line(f"hostile old server, {mode}: peak memory +{figure:.1f} MB")


def before(new: DovecotImap, mode: str):
    """What the victim and the bystander hold before a test (victims of a mode are used by one test only)."""
    return new.snapshot(f"victim-{mode}@example.com"), new.snapshot("bystander@example.com")


def run(tmp_path: Path, *args: str, figure: str) -> Outcome:
    """Run ``mailstack ARGS`` in a child process; its output and peak memory (printed, and kept for the summary)."""
    done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})
    lines = done.stderr.splitlines()
    memory = json.loads(next(line for line in lines if line.startswith("MEMORY "))[7:])
    peak_mb = (memory["peak_kb"] - memory["start_kb"]) / 1024
    FIGURES[figure] = peak_mb
    print(f"{figure}: exit {done.returncode}, peak memory +{peak_mb:.1f} MB")
    return Outcome(done.returncode, done.stdout, "\n".join(l for l in lines if not l.startswith("MEMORY ")), peak_mb)


def sync(tmp_path: Path, mode: str, *options: str, figure: str | None = None) -> Outcome:
    accounts = tmp_path / "accounts.csv"
    accounts.write_text("source_user,source_password,target_user,target_password\n"
                        f"{mode},{PASSWORD},victim-{mode}@example.com,new\n"
                        f"calm,{PASSWORD},calm-{mode}@example.com,new\n")
    return run(tmp_path, "sync", "--source", f"imap://{OLD}", "--target", f"imap://{NEW}", "--accounts", str(accounts),
               "--state-dir", str(tmp_path / "state"), "--json", "--jobs", "2", "--mailbox-deadline", "60s", *options,
               figure=figure or f"sync, {mode}")


def backup(tmp_path: Path, mode: str, fmt: str) -> Outcome:
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(f"source_user,source_password,target_user,target_password\n{mode},{PASSWORD},,\n")
    return run(tmp_path, "backup", "--source", f"imap://{OLD}", "--accounts", str(accounts), "--to",
               str(tmp_path / "backup"), "--format", fmt, "--mailbox-deadline", "60s", figure=f"backup {fmt}, {mode}")


def expected(behaviour, flags) -> dict[str, Counter]:
    """A behaviour's folders as the target should hold them: body digest, the flags given, INTERNALDATE."""
    return {name: Counter((hashlib.sha256(m.body).hexdigest(), frozenset(flags[name][m.uid]), internaldate_epoch(DATE))
                          for m in box.mails) for name, box in behaviour.boxes.items()}


def calm_copied(new: DovecotImap, mode: str) -> None:
    """The calm mailbox of the same run is exactly on its target."""
    flags = {"INBOX": {n: {"\\Seen", "$Forwarded"} for n in range(1, 4)}, "Work": {1: set(), 2: set()}}
    assert new.snapshot(f"calm-{mode}@example.com").folders == expected(calm(), flags)


def untouched(new: DovecotImap, mode: str, victim, bystander, *, copied: dict[str, Counter]) -> None:
    """The victim holds what it held, plus ``copied``; the bystander exactly what it held."""
    after = new.snapshot(f"victim-{mode}@example.com")
    for name, messages in victim.folders.items():
        assert after.folders[name] - copied.get(name, Counter()) == messages, f"{name} changed"
    assert set(after.folders) == set(victim.folders) | set(copied)
    assert new.snapshot("bystander@example.com") == bystander


def no_escapes(outcome: Outcome) -> None:
    assert "\x1b" not in outcome.out + outcome.err and "\x07" not in outcome.out + outcome.err


# ------------------------------------------------------------------ injection


def test_flags_that_are_commands_are_dropped_and_reported_and_never_reach_the_target(servers, tmp_path):
    old, new = servers
    victim, bystander = before(new, "inject")
    outcome = sync(tmp_path, "inject")
    kept = {1: {"\\Seen", "$Label1"}, 2: {"\\Flagged", "$Ok"}, 3: {"\\Answered", "Project-X"}}
    copied = {"INBOX": expected(Inject(), {"INBOX": kept, "Evil": {1: set()}})["INBOX"], "Evil": Counter()}
    untouched(new, "inject", victim, bystander, copied=copied)
    assert outcome.code == 3
    errors = "\n".join(outcome.mailbox("inject")["errors"])
    assert "INBOX: message UID 1: flag 'x)\\x0aX1 DELETE \"Important\"\\x0aX2 SELECT" in errors
    assert "message UID 2: flag 'A\\x0d\\x0aX6 DELETE \"Trash\"" in errors
    for flag in ("{5}", "\\Bogus", "\\x1b]0;pwned\\x07"):
        assert f"message UID 3: flag '{flag}' dropped: not an IMAP flag" in errors
    assert "Evil: source" in errors and "\\x1b]0;pwned\\x07\\x1b[2J" in errors
    no_escapes(outcome)
    assert outcome.mailbox("calm")["in_sync"]
    calm_copied(new, "inject")
    assert outcome.peak_mb < 40


@pytest.mark.parametrize("fmt", ["maildir", "mbox"])
def test_flags_that_are_commands_never_reach_backup_files(servers, tmp_path, fmt):
    outcome = backup(tmp_path, "inject", fmt)
    assert outcome.code == 3 and "flag 'x)\\x0aX1 DELETE" in outcome.err
    no_escapes(outcome)
    root = tmp_path / "backup" / "inject"
    if fmt == "maildir":
        keywords = (root / "dovecot-keywords").read_text().splitlines()
        assert sorted(line.split(" ", 1)[1] for line in keywords) == ["$Label1", "$Ok", "Project-X"]
        names = sorted(p.name.split(":2,")[1] for p in (root / "cur").iterdir())
        assert len(names) == 3 and all(letters.isalpha() for letters in names)
    else:
        text = (root / "INBOX.mbox").read_bytes()
        headers = [line for line in text.split(b"\n") if line.startswith(b"X-Keywords:")]
        assert headers == [b"X-Keywords: $Label1", b"X-Keywords: $Ok", b"X-Keywords: Project-X"]
        assert b"X1 DELETE" not in text and b"X6 DELETE" not in text
    assert outcome.peak_mb < 40


# ------------------------------------------------------------------ memory


def test_sizes_that_lie_are_charged_by_the_bytes_received(servers, tmp_path):
    old, new = servers
    victim, bystander = before(new, "lying")
    outcome = sync(tmp_path, "lying", "--max-message-size", "8")  # 40 messages of 3 MB, each announced at 100 bytes
    assert outcome.code == 3
    mailbox = outcome.mailbox("lying")
    assert mailbox["copied"] == 2  # 3 MB each: two fit in what one answer may hold (8 MiB)
    assert mailbox["errors"] == ["INBOX: messages UID 3:40 left out: the server sent more than it announced "
                                 "(RFC822.SIZE: 4000 bytes for 40 messages), past what one answer may hold "
                                 "(8388608 bytes)"]
    after = new.snapshot("victim-lying@example.com")
    assert sum(after.folders["INBOX"].values()) == 1 + mailbox["copied"]
    assert after.folders["Important"] == victim.folders["Important"] and after.folders["Trash"] == victim.folders["Trash"]
    assert new.snapshot("bystander@example.com") == bystander
    calm_copied(new, "lying")
    assert outcome.peak_mb < 60, "without the bound, one batch held all 120 MB (twice)"


def test_a_literal_over_the_largest_message_is_read_past_and_the_others_copied(servers, tmp_path):
    old, new = servers
    victim, bystander = before(new, "bigliteral")
    outcome = sync(tmp_path, "bigliteral", "--max-message-size", "8")
    assert outcome.code == 3
    errors = outcome.mailbox("bigliteral")["errors"]
    assert any(e.startswith("INBOX: message UID 2 left out: 20971") and "over the largest message this client holds "
               "(8388608 bytes: --max-message-size)" in e for e in errors), errors
    assert "INBOX: message UID 4 left out: 31457280 bytes (RFC822.SIZE), over the largest message copied " \
           "(8388608 bytes: --max-message-size)" in errors
    assert outcome.mailbox("bigliteral")["copied"] == 2  # UIDs 1 and 3, in the same session
    behaviour = MODES["bigliteral"]()
    untouched(new, "bigliteral", victim, bystander, copied={"INBOX": Counter(
        (hashlib.sha256(m.body).hexdigest(), frozenset({"\\Seen"}), internaldate_epoch(DATE))
        for m in behaviour.boxes["INBOX"].mails if m.uid in (1, 3))})
    calm_copied(new, "bigliteral")
    assert outcome.peak_mb < 40


def test_a_literal_of_four_gigabytes_stops_that_mailbox_at_once(servers, tmp_path):
    old, new = servers
    victim, bystander = before(new, "hugeliteral")
    outcome = sync(tmp_path, "hugeliteral")
    assert outcome.code == 3
    error = outcome.mailbox("hugeliteral")["errors"][0]
    assert "UID FETCH 'INBOX': the server sent a literal of 4000000000 bytes for UID 1, more than the 268435456 " \
           "bytes one answer may hold: stopped reading from it" in error
    untouched(new, "hugeliteral", victim, bystander, copied={"INBOX": Counter()})
    calm_copied(new, "hugeliteral")
    assert outcome.peak_mb < 30


@pytest.mark.parametrize("mode", ["flood", "fetchflood"])
def test_a_flood_of_untagged_responses_is_cut_off(servers, tmp_path, mode):
    old, new = servers
    victim, bystander = before(new, mode)
    outcome = sync(tmp_path, mode)
    assert outcome.code == 3
    assert "more than 10000 responses that are no answer (untagged OK/NO/BAD, stray lines, UIDs not asked for) to " \
           "one command: stopped reading from it" in outcome.mailbox(mode)["errors"][0]
    untouched(new, mode, victim, bystander, copied={"INBOX": Counter()} if mode == "fetchflood" else {})
    calm_copied(new, mode)
    assert outcome.peak_mb < 30


@pytest.mark.parametrize("option", ["--mailbox-deadline", "--deadline"])
def test_a_drip_of_ok_lines_ends_at_the_deadline_reported_as_such(servers, tmp_path, option):
    old, new = servers
    victim, bystander = before(new, "drip")
    outcome = sync(tmp_path, "drip", option, "4s", figure=f"sync, drip ({option} 4s)")
    assert outcome.code == 3
    name = "the deadline of one mailbox" if option == "--mailbox-deadline" else "the run's deadline"
    assert outcome.mailbox("drip")["errors"] == [f"not finished: {name} (4 s) passed; run again to go on from here"]
    untouched(new, "drip", victim, bystander, copied={})
    calm_copied(new, "drip")
    assert outcome.peak_mb < 30


# ------------------------------------------------------------------ wrong answers, malformed data


def test_fetch_answers_count_only_for_the_uids_asked_and_a_missing_one_is_missing(servers, tmp_path):
    old, new = servers
    victim, bystander = before(new, "wrongfetch")
    behaviour = MODES["wrongfetch"]()
    wanted = {"INBOX": Counter((hashlib.sha256(m.body).hexdigest(), frozenset({"\\Seen"}), internaldate_epoch(DATE))
                               for m in behaviour.boxes["INBOX"].mails if m.uid in (1, 3))}
    for attempt in (1, 2):  # the next run still misses UID 2, and copies nothing twice
        outcome = sync(tmp_path, "wrongfetch", figure=f"sync, wrongfetch (run {attempt})")
        assert outcome.code == 3
        assert outcome.mailbox("wrongfetch")["errors"] == [
            "INBOX: message UID 2 left out: asked for, and not sent by the source"]
        assert outcome.mailbox("wrongfetch")["copied"] == (2 if attempt == 1 else 0)
        untouched(new, "wrongfetch", victim, bystander, copied=wanted)
    state = state_file(tmp_path / "state", f"imap://{OLD}:143", "wrongfetch", f"imap://{NEW}:143",
                       "victim-wrongfetch@example.com")
    with sqlite3.connect(state) as db:
        rows = dict(db.execute("SELECT source_uid, size FROM messages WHERE source = 'INBOX'").fetchall())
    assert rows == {1: len(mail(601)), 3: len(mail(603))}  # which bytes: the target's snapshot above
    calm_copied(new, "wrongfetch")


def test_malformed_dates_flags_and_names_are_problems_of_their_messages_not_a_crash(servers, tmp_path):
    old, new = servers
    victim, bystander = before(new, "malformed")
    outcome = sync(tmp_path, "malformed")
    assert outcome.code == 3
    mailbox = outcome.mailbox("malformed")
    assert mailbox["copied"] == 5
    errors = "\n".join(mailbox["errors"])
    assert "message UID 1: its date (INTERNALDATE '31-Feb-2023 25:61:61 +9999') is not a date: not carried" in errors
    assert "message UID 2: its date (INTERNALDATE 'yesterday') is not a date" in errors
    assert "message UID 5: its date (INTERNALDATE '0-Jan-0000 00:00:00 +0000') is not a date" in errors
    assert "message UID 3: flag '(...)' dropped" in errors and "message UID 5: flag '\\Seen' dropped" in errors
    assert "UID 4" not in errors
    after = new.snapshot("victim-malformed@example.com")
    assert sum(after.folders["INBOX"].values()) == 1 + 5
    dates = {date for (_, _, date) in after.folders["INBOX"]}
    assert internaldate_epoch("17-Jul-1996 02:44:25 -0700") in dates
    assert after.folders["Important"] == victim.folders["Important"]
    assert new.snapshot("bystander@example.com") == bystander
    assert outcome.mailbox("calm")["in_sync"]
    calm_copied(new, "malformed")


@pytest.mark.parametrize("fmt", ["maildir", "mbox"])
def test_folder_names_never_lead_a_backup_out_of_its_mailbox_directory(servers, tmp_path, fmt):
    outcome = backup(tmp_path, "names", fmt)
    no_escapes(outcome)
    assert outcome.code == 0, outcome.err
    backup_root = tmp_path / "backup"
    assert [p.name for p in backup_root.iterdir()] == ["names"]
    root = backup_root / "names"
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith((".mailstack", "dovecot"))
             and p.name != "maildirfolder"]
    assert len(files) == len(Names.NAMES)
    assert all(os.path.realpath(p).startswith(str(root) + os.sep) for p in root.rglob("*"))
    assert not (tmp_path / "escape").exists() and not (tmp_path / "b").exists()
    notes = [line for line in outcome.out.splitlines() if "saved as" in line]
    assert any(f"folder '{'x' * 300}' saved as" in line and "longer than a file name" in line for line in notes)
    if fmt == "maildir":  # "/" would be the directory "..": mapped (in mbox it is ".sbd/.mbox", inside)
        assert any("folder '/' saved as .mailstack-mapped-" in line and "would leave the mailbox's directory" in line
                   for line in notes), outcome.out
    assert len(notes) == (2 if fmt == "maildir" else 1)
    again = backup(tmp_path, "names", fmt)
    assert again.code == 0 and "0 messages written, 7 already there" in again.out


def test_lists_nested_a_hundred_thousand_deep_are_problems_of_their_message_not_a_crash(servers, tmp_path):
    old, new = servers
    victim, bystander = before(new, "deep")
    outcome = sync(tmp_path, "deep")
    assert outcome.code == 3 and "Traceback" not in outcome.err
    mailbox = outcome.mailbox("deep")
    assert mailbox["errors"] == ["INBOX: message UID 2: flag '(...)' dropped: not an IMAP flag"]
    assert mailbox["copied"] == 3  # the LIST entry nested deep is no folder: nothing else is made
    behaviour = MODES["deep"]()
    untouched(new, "deep", victim, bystander,
              copied=expected(behaviour, {"INBOX": {uid: {"\\Seen"} for uid in (1, 2, 3)}}))
    assert outcome.mailbox("calm")["in_sync"]
    calm_copied(new, "deep")
    saved = backup(tmp_path, "deep", "mbox")
    assert saved.code == 3 and "Traceback" not in saved.err
    assert "deep: backup INCOMPLETE (1 folders, 3 messages written, 0 already there -> " in saved.err
    assert saved.err.endswith("): INBOX: message UID 2: flag '(...)' dropped: not an IMAP flag")
    assert len((tmp_path / "backup" / "deep" / "INBOX.mbox").read_bytes().split(b"\nFrom ")) == 3


def test_a_snapshot_shows_a_folder_listed_then_refused_as_a_difference_not_a_crash(servers, monkeypatch):
    """The fidelity checks of the tests and the bench: a folder a server lists as selectable and then refuses to
    open is in the snapshot with the server's words, never read as empty, and the other folders are read."""
    monkeypatch.setitem(MODES, "refusing", lambda: Behaviour([Box("INBOX", [Mail(1, mail(1))]),
                                                              Box("Gone", [Mail(1, mail(2))], examine_no=b"it is gone")]))
    client = imaplib.IMAP4(OLD, 143)
    try:
        client.login("refusing", PASSWORD)
        snapshot = _snapshot(client, "", "/")
    finally:
        client.logout()
    assert snapshot.folders["Gone"] == Counter({("SELECT refused: it is gone", frozenset(), 0): 1})
    assert snapshot.refused == {"Gone": "it is gone"}
    assert snapshot.folders["INBOX"] == Counter(
        {(hashlib.sha256(mail(1)).hexdigest(), frozenset({"\\Seen"}), internaldate_epoch(DATE)): 1})
