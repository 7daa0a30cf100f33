"""Folder names the new server refuses, predicted and mapped (pure); flags compared message by message (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailstack.imap import Namespace
from mailstack.sync import flagcheck, names, plan
from mailstack.sync.plan import FolderRules

SLASH = Namespace("", "/")
COURIER = Namespace("INBOX.", ".")
HOST = names.naming_for("/")


def test_the_names_dovecot_maildir_refuses_are_predicted_with_their_reason():
    assert "refuses '.'" in names.problem(["john.doe"], HOST)
    assert "refuses '.'" in names.problem(["Projects", "v2.0"], HOST)
    assert "begin with '~'" in names.problem(["~tilde"], HOST)
    assert "control character" in names.problem(["tab\there"], HOST)
    assert "empty level" in names.problem(["a", "", "b"], HOST)
    assert "at most 254" in names.problem(["x" * 255], HOST)
    for fine in (["Zeta"], ["a~b"], ["x" * 254], ["名前"], ["a", "~b"], ["Sent Items"], ["a%b"]):
        assert names.problem(fine, HOST) is None, fine


def test_the_length_counts_the_name_as_sent_in_modified_utf7():
    assert names.problem(["名" * 80], HOST) is None  # 216 bytes as sent, measured accepted
    assert names.problem(["名" * 100], HOST) is not None


def test_a_refused_folder_is_reported_with_the_map_that_fixes_it_and_what_map_invalid_would_do():
    folder = plan.plan_folder("Projects/v2.0", SLASH, SLASH, FolderRules(), HOST)
    assert folder.target is None
    assert "refuses '.'" in folder.reason and "--map 'Projects/v2.0=Projects/v2_0'" in folder.reason
    assert "--map-invalid (it becomes 'Projects/v2\u20240')" in folder.reason
    child = plan.plan_folder("john.doe/Sub", SLASH, SLASH, FolderRules(), HOST)
    assert "--map 'john.doe=john_doe'" in child.reason  # the parent's map renames its subfolders too


def test_map_invalid_maps_refused_names_stably_and_reversibly_and_keeps_good_names():
    rules = FolderRules(map_invalid=True)
    folder = plan.plan_folder("Projects/v2.0", SLASH, SLASH, rules, HOST)
    assert folder.target == plan.wire_name("Projects/v2\u20240", SLASH) and folder.mapped_from == "Projects/v2.0"
    assert plan.plan_folder("Projects/v2.0", SLASH, SLASH, rules, HOST) == folder
    assert plan.plan_folder("Zeta", SLASH, SLASH, rules, HOST).mapped_from == ""
    assert names.unmapped(names.mapped(["~x.y", "a\tb"], HOST)) == ["~x.y", "a\tb"]


@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=4))
def test_every_mapping_is_accepted_by_the_target_and_reverses_to_the_original(parts):
    mapped = names.mapped(parts, HOST)
    if mapped is not None:
        assert names.problem(mapped, HOST) is None
        assert names.unmapped(mapped) == parts


def test_a_name_already_holding_a_lookalike_is_not_mapped_since_it_could_not_be_told_apart():
    assert names.mapped(["a\u2024b.c"], HOST) is None
    folder = plan.plan_folder("a\u2024b.c", SLASH, SLASH, FolderRules(map_invalid=True), HOST)
    assert folder.target is None and "--map" in folder.reason


def test_an_automatic_mapping_onto_another_folder_is_refused_but_an_operator_map_may_merge():
    sources = ["a.b", "a\u2024b", "Sent Items", "Sent"]
    rules = FolderRules(renames=(("Sent Items", "Sent"),), map_invalid=True)
    plans = {p.name: p for p in plan.plan_folders(sources, SLASH, SLASH, rules, HOST)}
    assert plans["a.b"].target is None and "another folder already takes" in plans["a.b"].reason
    assert plans["a\u2024b"].target is not None
    assert plans["Sent Items"].target == plans["Sent"].target == "Sent"


def test_a_dot_separated_target_refuses_a_dot_inside_a_level_only():
    courier = names.naming_for(".")
    assert names.problem(["Q1", "2024"], courier) is None
    assert "hierarchy separator" in names.problem(["Q1.2024"], courier)
    assert names.mapped(["Q1.2024"], courier) == ["Q1\u20242024"]


def test_flags_are_compared_message_by_message_through_the_uid_pairs():
    source = {1: frozenset({"\\Seen", "$Kw27"}), 2: frozenset({"$Kw1"}), 3: frozenset(), 4: frozenset({"\\Seen"})}
    target = {10: frozenset({"\\Seen"}), 11: frozenset({"$Kw1", "\\Flagged"}), 12: frozenset()}
    pairs = {1: 10, 2: 11, 3: 12, 4: 13}
    differences, gone = flagcheck.flag_differences(source, target, pairs)
    assert [(d.source_uid, d.missing, d.extra) for d in differences] == [
        (1, frozenset({"$Kw27"}), frozenset()), (2, frozenset(), frozenset({"\\Flagged"}))]
    assert gone == [4]
    assert flagcheck.repairs(differences, target) == {frozenset({"\\Seen", "$Kw27"}): [10]}
    lines = flagcheck.describe(differences, gone, repaired=True)
    assert lines[0] == "1 message(s) lacked flags on the new server (repaired): $Kw27 (1)"
    assert "left alone): \\Flagged (1)" in lines[1] and "no longer on the new server" in lines[2]


def test_a_name_the_target_already_holds_is_taken_as_it_is():
    folder = plan.plan_folders(["john.doe"], SLASH, SLASH, FolderRules(), HOST, existing={"john.doe"})[0]
    assert folder.target == "john.doe" and not folder.reason


@given(st.lists(st.text(min_size=1, max_size=100), min_size=1, max_size=4))
def test_the_suggested_map_is_a_name_the_target_accepts(parts):
    assert names.problem(names.readable(parts, HOST), HOST) is None


def test_a_refused_name_made_by_an_operator_map_points_at_that_map():
    folder = plan.plan_folder("Sent", SLASH, SLASH, FolderRules(renames=(("Sent", "Sent.old"),)), HOST)
    assert folder.reason.endswith("change the --map that renames 'Sent' to 'Sent.old'")
