"""POP3 UIDLs: matching old POP3 messages to copied IMAP messages, and the host script's uidlist rewrite."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json

import pytest

from mailstack.host.files import render_host_files
from mailstack.stack.roster import load_roster
from mailstack.stack.settings import settings_from_values
from mailstack.sync.pop3uidl import PopMessage, header_digest, match_uidls, metadata_value
from tests.conftest import stack_values, write_roster

UIDLIST = ("3 V1796112704 N208 G419d7c2940810e6b2a78000083ecc375\n"
           "1 :1796112704.M694640P30762.vm,S=204,W=212\n"
           "2 W212 :1796112704.M697887P30762.vm,S=204,W=212\n"
           "207 :1796112719.M831919P32525.vm,S=30,W=33\n")


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    """The host's post-login script as the bundle renders it, loaded as a module."""
    directory = tmp_path_factory.mktemp("script")
    settings = settings_from_values(stack_values("r.csv"), source="t")
    roster = load_roster(write_roster(directory / "r.csv", 2), domains=settings.domains)
    files = render_host_files(settings, roster, password_seed="s" * 48, mail_volume_id="vol-1")
    path = directory / "mailstack_pop3_uidls.py"
    path.write_text(files["/usr/local/sbin/mailstack-pop3-uidls"].content)
    assert files["/usr/local/sbin/mailstack-pop3-uidls"].mode == "0755"
    loader = importlib.machinery.SourceFileLoader("mailstack_pop3_uidls", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def test_pop3_top_and_imap_header_give_the_same_digest():
    imap_header = b"Subject: a\r\nFrom: b@example.org\r\n\r\n"
    pop3_top_lines = [b"Subject: a", b"From: b@example.org", b""]
    assert header_digest(b"\r\n".join(pop3_top_lines)) == header_digest(imap_header)
    assert header_digest(b"Subject: b\r\n\r\n") != header_digest(imap_header)


def test_messages_are_matched_by_header_and_duplicates_in_order():
    pop = [PopMessage(1, "u-a", "A"), PopMessage(2, "u-dup1", "D"), PopMessage(3, "u-dup2", "D"),
           PopMessage(4, "u-gone", "X")]
    imap = {10: "A", 12: "D", 11: "D", 13: "N"}
    assert match_uidls(pop, imap) == {10: ("u-a", 1), 11: ("u-dup1", 2), 12: ("u-dup2", 3)}


def test_the_map_is_one_line_of_json():
    value = metadata_value(7, {3: ("x", 2), 1: ("y", 1)})
    assert "\n" not in value and json.loads(value) == {"uidvalidity": 7, "uids": {"1": ["y", 1], "3": ["x", 2]}}


def test_the_uidlist_gets_p_and_o_on_the_mapped_uids_and_keeps_everything_else(script):
    text, applied = script.rewrite_uidlist(UIDLIST, 1796112704, {1: ("old-1", 5), 2: ("old:2", 1)})
    assert applied == 2
    assert text.splitlines() == [
        "3 V1796112704 N208 G419d7c2940810e6b2a78000083ecc375",
        "1 Pold-1 O5 :1796112704.M694640P30762.vm,S=204,W=212",
        "2 W212 Pold:2 O1 :1796112704.M697887P30762.vm,S=204,W=212",
        "207 :1796112719.M831919P32525.vm,S=30,W=33",
    ]
    again, _ = script.rewrite_uidlist(text, 1796112704, {1: ("old-1", 5), 2: ("old:2", 1)})
    assert again == text  # applying twice changes nothing


def test_a_map_for_another_uidvalidity_is_not_applied(script):
    assert script.rewrite_uidlist(UIDLIST, 1, {1: ("old-1", 5)}) == (None, 0)


def test_malformed_entries_of_the_map_are_left_out(script):
    entries = script.valid_entries({"1": ["ok", 1], "2": ["has space", 2], "3": ["x" * 71, 3], "x": ["ok", 4],
                                    "5": ["ok", 0], "6": ["new\nline", 6]})
    assert entries == {1: ("ok", 1)}


def test_an_unknown_uidlist_version_is_refused(script):
    with pytest.raises(ValueError, match="unsupported dovecot-uidlist version"):
        script.rewrite_uidlist("1 V1 N2\n", 1, {})
