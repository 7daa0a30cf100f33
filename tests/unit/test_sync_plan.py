"""The sync's decisions as pure functions: folder names, what to copy, flags, batches, recognising copies."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstack.imap import FolderStatus, Listed, Message, Namespace, utf7
from mailstack.imap.wire import parse_uid_set, uid_set
from mailstack.problems import InputError
from mailstack.sync import plan
from mailstack.sync.accounts import parse_accounts
from mailstack.sync.plan import FolderMark, FolderRules, FolderState

COURIER = Namespace("INBOX.", ".")
PLAIN = Namespace("", "/")


@given(st.text(min_size=1))
def test_modified_utf7_round_trips_any_name(name):
    encoded = utf7.encode(name)
    assert encoded.isascii() and utf7.decode(encoded) == name


def test_modified_utf7_matches_rfc3501_examples():
    assert utf7.encode("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert utf7.encode("Tom & Jerry") == "Tom &- Jerry"


@given(st.sets(st.integers(min_value=1, max_value=10_000)))
def test_uid_sets_are_compact_and_exact(uids):
    assert parse_uid_set(uid_set(uids)) == sorted(uids) if uids else uid_set(uids) == ""


def test_a_courier_folder_lands_under_the_plain_name_on_the_new_server():
    folder = plan.plan_folder("INBOX.Archive.&ZeVnLIqe-", COURIER, PLAIN, FolderRules())
    assert (folder.name, folder.target) == ("Archive/日本語", "Archive/&ZeVnLIqe-")
    assert plan.plan_folder("INBOX", COURIER, PLAIN, FolderRules()).target == "INBOX"


def test_renames_apply_to_a_folder_and_its_subfolders_and_excludes_win():
    rules = FolderRules(exclude=("Trash",), renames=(("Sent Items", "Sent"),))
    assert plan.plan_folder("Sent Items/2024", PLAIN, COURIER, rules).target == "INBOX.Sent.2024"
    assert plan.plan_folder("Trash", PLAIN, COURIER, rules).reason == "excluded"
    assert plan.plan_folder("Sent Itemsx", PLAIN, COURIER, rules).target == "INBOX.Sent Itemsx"


def test_a_name_holding_the_target_separator_is_refused_with_the_remedy():
    folder = plan.plan_folder("Q1.2024", PLAIN, COURIER, FolderRules())
    assert folder.target is None and "rename it with --map" in folder.reason


def test_an_include_without_wildcards_that_names_no_folder_is_reported():
    assert FolderRules(include=("INBOX", "Projects", "Arch*")).missing_explicit(["INBOX"]) == ["Projects"]


@pytest.mark.parametrize("text", ["Sent", "=Sent", "Sent=", ""])
def test_a_bad_rename_says_how_to_write_one(text):
    with pytest.raises(ValueError, match="is not a folder rename OLD=NEW"):
        plan.parse_rename(text)


def listed(uid: int, flags=(), size: int = 100, date_: str = "14-Nov-2023 22:13:20 +0000") -> Listed:
    return Listed(uid, frozenset(flags), size, date_)


def test_only_messages_not_yet_copied_are_copied_and_only_source_flag_changes_are_carried():
    state = FolderState(1, 1, {1: (10, frozenset({"\\Seen"})), 2: (11, frozenset())})
    source = [listed(1, {"\\Seen"}), listed(2, {"\\Flagged"}), listed(3)]
    assert [m.uid for m in plan.to_copy(source, state)] == [3]
    assert plan.flag_changes(source, state) == {2: frozenset({"\\Flagged"})}
    assert plan.group_by_flags({2: frozenset({"\\Flagged"})}, state) == {frozenset({"\\Flagged"}): [11]}


def test_a_changed_uidvalidity_on_either_side_starts_the_folder_afresh():
    state = FolderState(1, 1, {1: (10, frozenset())})
    assert plan.still_valid(state, 1, 1) is state
    assert plan.still_valid(state, 2, 1).synced == {} and plan.still_valid(state, 1, 2).synced == {}


SOURCE, TARGET = FolderStatus(1, 50, 40, 900), FolderStatus(7, 60, 45, 300)


def test_an_unchanged_folder_is_skipped_only_with_condstore_and_the_same_cutoff():
    mark = FolderMark(SOURCE, TARGET)
    assert plan.why_look(mark, SOURCE, TARGET, None) == ""
    assert plan.why_look(None, SOURCE, TARGET, None) == "no complete run of it recorded"
    assert "added or removed on the source" in plan.why_look(mark, FolderStatus(1, 51, 41, 901), TARGET, None)  # new mail
    assert "added or removed on the source" in plan.why_look(mark, FolderStatus(1, 50, 39, 901), TARGET, None)  # expunge
    assert "changed on the source" in plan.why_look(mark, FolderStatus(1, 50, 40, 901), TARGET, None)  # a flag changed
    assert "CONDSTORE" in plan.why_look(mark, FolderStatus(1, 50, 40), TARGET, None)  # no CONDSTORE: never skipped
    assert "CONDSTORE" in plan.why_look(FolderMark(FolderStatus(1, 50, 40), TARGET), SOURCE, TARGET, None)
    since = FolderMark(SOURCE, TARGET, 1_700_000_000)
    assert "older mail" in plan.why_look(since, SOURCE, TARGET, None)  # this run wants older mail too
    assert "older mail" in plan.why_look(since, SOURCE, TARGET, 1_600_000_000)
    assert plan.why_look(since, SOURCE, TARGET, 1_800_000_000) == ""


def test_a_folder_made_again_on_the_target_is_looked_at():
    assert "made again on the target" in plan.why_look(FolderMark(SOURCE, TARGET), SOURCE,
                                                       FolderStatus(8, 1, 0, 1), None)


@pytest.mark.parametrize("target", [
    FolderStatus(7, 61, 46, 301),  # a message delivered there (after the MX change, every INBOX)
    FolderStatus(7, 60, 44, 301),  # one expunged or moved out there
    FolderStatus(7, 60, 45, 301),  # a flag changed there
    FolderStatus(7, 60, 45),       # its CONDSTORE support gone
])
def test_a_change_made_only_on_the_target_does_not_make_the_source_be_listed(target):
    """A forward run never carries a target-side change back: listing the source for it would find nothing to do."""
    assert plan.why_look(FolderMark(SOURCE, TARGET), SOURCE, target, None) == ""
    assert plan.why_look(FolderMark(SOURCE, FolderStatus(7, 60, 45)), SOURCE, target, None) == ""


def test_batches_bound_bytes_and_count_and_keep_a_large_message_alone():
    messages = [listed(n, size=s) for n, s in enumerate([400, 400, 400, 5000, 10, 10, 10], start=1)]
    groups = plan.batches(messages, max_bytes=1000, max_count=2)
    assert [[m.uid for m in g] for g in groups] == [[1, 2], [3], [4], [5, 6], [7]]


def test_a_batch_names_at_most_max_runs_ranges_of_uids_so_its_command_line_stays_short():
    first = 4_000_000_001  # ten digits, as large as UIDs are (32 bits)
    sparse = [listed(uid, size=10) for uid in range(first, first + 4 * plan.MAX_RUNS, 2)]  # every other UID
    groups = plan.batches(sparse, max_bytes=10**9, max_count=10**6)
    assert [len(g) for g in groups] == [plan.MAX_RUNS, plan.MAX_RUNS]
    assert all(len(uid_set(m.uid for m in g)) < 8192 - 100 for g in groups)
    contiguous = [listed(uid, size=10) for uid in range(1, 3001)]  # one range: only the count bounds it
    assert [len(g) for g in plan.batches(contiguous, max_bytes=10**9, max_count=1000)] == [1000, 1000, 1000]


def test_uid_ranges_are_counted_afresh_in_a_batch_that_starts_inside_a_range(monkeypatch):
    monkeypatch.setattr(plan, "MAX_RUNS", 2)
    messages = [listed(uid, size=size) for uid, size in [(1, 10), (2, 10), (3, 10), (5, 1), (6, 1), (8, 1), (10, 1)]]
    groups = plan.batches(messages, max_bytes=20, max_count=100)  # the bytes cut between UIDs 2 and 3
    assert [[m.uid for m in g] for g in groups] == [[1, 2], [3, 5, 6], [8, 10]]
    assert runs_of(groups) == [1, 2, 2]


def runs_of(groups) -> list[int]:
    return [len(uid_set(m.uid for m in g).split(",")) for g in groups]


def test_pending_messages_are_batched_as_listed_ones_and_held_in_16_bytes_each_with_their_metadata_as_listed():
    flags = [frozenset(), frozenset({"\\Seen"}), frozenset({"$Label1", "\\Seen"})]
    messages = [listed(n, size=s, flags=flags[n % 3], date_=f"0{n}-Jan-2020 10:00:00 +0900")
                for n, s in enumerate([400, 400, 400, 5000, 10, 10, 10], start=1)]
    pending = plan.Pending.of(messages)
    assert len(pending) == 7 and pending.bytes == 6230
    assert pending.uids.itemsize + pending.sizes.itemsize == 16
    assert all(pending.flags[i] is m.flags and pending.dates[i] is m.internaldate for i, m in enumerate(messages))
    assert list(pending.batches(max_bytes=1000, max_count=2)) == [
        ([m.uid for m in group], sum(m.size for m in group), {m.uid: (m.flags, m.internaldate) for m in group})
        for group in plan.batches(messages, max_bytes=1000, max_count=2)]



def test_identical_messages_pair_one_to_one_so_none_is_lost_or_duplicated():
    same = (100, 5, "digest")
    assert plan.match_copies({1: same, 2: same, 3: (1, 1, "x")}, {7: same}) == {1: 7}
    assert plan.match_copies({1: same, 2: same}, {7: same, 9: same}) == {1: 7, 2: 9}


def test_candidates_are_compared_by_size_and_date_before_any_header_is_fetched():
    source = [listed(1, size=10), listed(2, size=20)]
    target = [listed(5, size=20), listed(6, size=30)]
    assert plan.candidates(source, target) == ([2], [5])


def test_since_is_the_later_of_the_date_and_the_age():
    today = date(2026, 11, 23)
    assert plan.since_day(today, date(2026, 1, 1), 30) == date(2026, 10, 24)
    assert plan.since_day(today, date(2026, 11, 1), 30) == date(2026, 11, 1)
    assert plan.since_day(today, None, None) is None


def test_the_accounts_file_reports_each_bad_row_and_keeps_the_good_ones():
    text = ("source_user,source_password,target_user,target_password\n"
            "a,pw-a,a@example.com,new-a\n"
            "b,,b@example.com,new-b\n"
            "c,pw,c@example.com\n"
            "# a comment\n"
            "d,\"p,w\",A@example.com,new-d\n")
    accounts, problems = parse_accounts(text, "acc.csv")
    assert [a.source_user for a in accounts] == ["a"]
    assert [str(p) for p in problems] == [
        "acc.csv:3: source_password empty",
        "acc.csv:4: expected 4 fields, found 3",
        "acc.csv:6: target_user 'A@example.com' already has a row at acc.csv:2"]
    assert "pw-a" not in repr(accounts[0])


def test_an_accounts_file_with_another_header_is_refused_as_a_whole():
    with pytest.raises(InputError, match="acc.csv:1: the header must be exactly source_user,source_password"):
        parse_accounts("user,password\na,b\n", "acc.csv")


def test_the_state_file_name_does_not_show_the_user(tmp_path: Path):
    from mailstack.sync.state import state_file

    path = state_file(tmp_path, "imaps://old:993", "taro", "imaps://new:993", "taro@example.com")
    assert "taro" not in path.name and path.suffix == ".sqlite"


# ---------------------------------------------------------------- what a server answered


def message(uid: int, body: bytes = b"x", *, problems=(), not_kept: str = "") -> Message:
    return Message(uid, frozenset(), "", body, tuple(problems), not_kept)


def test_an_answer_is_checked_uid_by_uid_against_what_was_asked():
    fetched = [message(1, problems=["flag '{5}' dropped: not an IMAP flag"]), message(3, not_kept="too large"),
               message(4)]
    stored, problems = plan.check_answer([1, 2, 3, 4], fetched)
    assert [m.uid for m in stored] == [1, 4]
    assert problems == ["message UID 2 left out: asked for, and not sent by the source",
                        "message UID 3 left out: too large",
                        "message UID 1: flag '{5}' dropped: not an IMAP flag"]


def test_a_message_announced_too_large_is_not_fetched():
    kept, problems = plan.within_size([listed(1, size=10), listed(2, size=11)], 10)
    assert [m.uid for m in kept] == [1]
    assert problems == ["message UID 2 left out: 11 bytes (RFC822.SIZE), over the largest message copied "
                        "(10 bytes: --max-message-size)"]


def test_a_date_that_is_not_a_date_never_matches_and_never_raises():
    assert plan.quick_key(listed(1, date_="31-Feb-2023 25:61:61 +9999")) == (100, -1)
    assert plan.quick_key(listed(1, date_="")) == (100, 0)
    assert plan.candidates([listed(1, date_="junk")], [listed(5, date_="junk")]) == ([1], [5])  # same junk, same key


def test_the_same_problem_on_many_messages_is_one_line():
    fetched = [Message(uid, frozenset(), "", b"x", ("flag 'x y' dropped: not an IMAP flag",)) for uid in (1, 2, 3, 7)]
    assert plan.check_answer([1, 2, 3, 5, 6, 7], fetched)[1] == [
        "messages UID 5:6 left out: asked for, and not sent by the source",
        "messages UID 1:3,7: flag 'x y' dropped: not an IMAP flag"]

