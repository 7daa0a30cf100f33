"""The IMAP wire format on its own: every response form the sync relies on, a stream split anywhere, what may be
written back (flags, strings, dates), and the bounds on what a server's answer may make the client hold."""

from __future__ import annotations

import asyncio
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstack.imap.client import CommandFailed, ImapConnection, Limits, NoSuchFolder, ServerMisbehaved
from mailstack.imap.wire import (
    Literal,
    Tagged,
    Untagged,
    as_bytes,
    classify,
    date_time,
    fetch_items,
    flag,
    flag_list,
    flags_of,
    internaldate,
    parse_uid_set,
    printable,
    quote,
    tag_of,
    uid_set,
)
from tests.conftest import NullWriter


def untagged(*parts: bytes) -> Untagged:
    response = classify(list(parts))
    assert isinstance(response, Untagged)
    return response


def test_a_fetch_with_a_literal_body_gives_the_exact_bytes():
    body = b"Subject: hi\r\n\r\nline one\r\n)(\"{3}\r\n"
    response = untagged(b"* 12 FETCH (UID 7 RFC822.SIZE 32 BODY[] {%d}" % len(body), body, b" FLAGS (\\Seen $Label1))")
    assert (response.kind, response.number) == ("FETCH", 12)
    items = fetch_items(response.tokens())
    assert items == {"UID": "7", "RFC822.SIZE": "32", "BODY[]": body, "FLAGS": ["\\Seen", "$Label1"]}


def test_literal_plus_announcements_are_read_like_synchronising_ones():
    response = untagged(b'* LIST (\\HasNoChildren) "." {5+}', b"A B C", b"")
    assert response.tokens() == [["\\HasNoChildren"], ".", b"A B C"]


def test_quoted_strings_keep_escaped_quotes_and_backslashes():
    response = untagged(b'* LIST (\\Noselect) "/" "Say \\"hi\\" \\\\ there"')
    assert response.tokens() == [["\\Noselect"], "/", 'Say "hi" \\ there']


def test_nil_is_none_and_a_quoted_nil_is_text():
    response = untagged(b'* LIST () NIL "NIL"')
    assert response.tokens() == [[], None, "NIL"]


def test_nested_lists_keep_their_shape():
    response = untagged(b'* NAMESPACE (("INBOX." ".")) NIL (("#shared/" "/")("#public/" "/"))')
    assert response.tokens() == [[["INBOX.", "."]], None, [["#shared/", "/"], ["#public/", "/"]]]


def test_body_sections_with_brackets_and_spaces_are_one_atom():
    response = untagged(b"* 3 FETCH (UID 9 BODY[HEADER.FIELDS (MESSAGE-ID DATE)] {4}", b"ab\r\n", b")")
    items = fetch_items(response.tokens())
    assert items == {"UID": "9", "BODY[HEADER.FIELDS (MESSAGE-ID DATE)]": b"ab\r\n"}


def test_internaldate_is_one_quoted_string():
    response = untagged(b'* 1 FETCH (UID 1 INTERNALDATE "17-Jul-1996 02:44:25 -0700")')
    assert fetch_items(response.tokens())["INTERNALDATE"] == "17-Jul-1996 02:44:25 -0700"


def test_esearch_gives_its_tag_and_uid_set():
    response = untagged(b'* ESEARCH (TAG "A5") UID ALL 1:3,7,9:10')
    assert response.kind == "ESEARCH"
    assert response.tokens() == [["TAG", "A5"], "UID", "ALL", "1:3,7,9:10"]
    assert parse_uid_set(response.tokens()[-1]) == [1, 2, 3, 7, 9, 10]


def test_status_and_search_responses():
    assert untagged(b'* STATUS "Sent" (MESSAGES 3 UIDNEXT 8 UIDVALIDITY 42)').tokens() == [
        "Sent", ["MESSAGES", "3", "UIDNEXT", "8", "UIDVALIDITY", "42"]]
    assert untagged(b"* SEARCH 2 84 882").text() == "2 84 882"


def test_untagged_ok_with_a_response_code():
    response = untagged(b"* OK [UIDVALIDITY 3857529045] UIDs valid")
    assert (response.kind, response.code()) == ("OK", "UIDVALIDITY 3857529045")


def test_tagged_completions_give_status_code_and_text():
    assert classify([b"A12 OK [APPENDUID 38505 3955] APPEND completed"]) == Tagged(
        "OK", "APPENDUID 38505 3955", "APPEND completed")
    assert classify([b"A13 NO [OVERQUOTA] Quota exceeded"]) == Tagged("NO", "OVERQUOTA", "Quota exceeded")
    assert classify([b"A14 bad Unknown command"]) == Tagged("BAD", None, "Unknown command")
    assert tag_of([b"A14 BAD x"]) == "A14"


def test_a_continuation_is_neither_tagged_nor_untagged():
    assert classify([b"+ Ready for literal data"]) is None


def test_untagged_responses_interleaved_with_the_tagged_one_are_read_in_order():
    stream = (b"* 1 EXISTS\r\n* 1 FETCH (UID 5 FLAGS (\\Seen))\r\n"
              b"* OK [HIGHESTMODSEQ 7] x\r\nA1 OK SELECT done\r\n")
    responses = [classify(parts) for parts in read_responses([stream])]
    assert [type(r).__name__ for r in responses] == ["Untagged", "Untagged", "Untagged", "Tagged"]
    assert [r.kind for r in responses[:3]] == ["EXISTS", "FETCH", "OK"]
    assert responses[3].ok


def test_arguments_are_quoted_or_sent_as_literals():
    assert quote('Sent "Items"') == b'"Sent \\"Items\\""'
    assert quote("a\\b") == b'"a\\\\b"'
    assert quote("line\r\nbreak") == Literal(b"line\r\nbreak")
    assert quote("日本") == Literal("日本".encode())


def test_uid_sets_round_trip():
    assert uid_set([10, 9, 1, 2, 3, 7]) == "1:3,7,9:10"
    assert parse_uid_set("5:3") == [5, 4, 3]
    assert as_bytes(None) == b""


# ---------------------------------------------------------------- a stream split at random


def read_responses(chunks: list[bytes]) -> list[list[bytes]]:
    """Every response of a byte stream that arrives in ``chunks``, read as the client reads them."""

    async def run() -> list[list[bytes]]:
        reader = asyncio.StreamReader(limit=1 << 20)
        for chunk in chunks:
            reader.feed_data(chunk)
        reader.feed_eof()
        connection = ImapConnection(reader, None, "test", timeout=5)
        responses = []
        while not reader.at_eof():
            responses.append(await connection._read_parts())
        return responses

    return asyncio.run(run())


atoms = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789\\$-_.", min_size=1,
                max_size=12).filter(lambda a: a.upper() != "NIL")
quoted = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
literals = st.binary(max_size=60)


def encode(token) -> tuple[bytes, bytes | None]:
    """Wire form of one token: text, and the literal's bytes when it is one (always last on its line)."""
    if isinstance(token, bytes):
        return b"{%d}\r\n" % len(token), token
    if isinstance(token, list):
        return b"(" + b" ".join(encode(t)[0] for t in token) + b")", None
    if token is None:
        return b"NIL", None
    if token.startswith('"'):
        text = token[1:]
        return b'"' + text.encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"', None
    return token.encode(), None


tokens = st.recursive(
    st.one_of(atoms, quoted.map(lambda q: '"' + q), st.none()),
    lambda children: st.lists(children, max_size=4),
    max_leaves=10,
)


def parsed(token):
    """What the parser must give for a generated token."""
    if isinstance(token, list):
        return [parsed(t) for t in token]
    return token[1:] if isinstance(token, str) and token.startswith('"') else token


@st.composite
def responses(draw):
    """A FETCH-like untagged response (wire bytes, expected tokens): tokens, optionally a literal and more tokens."""
    head = draw(st.lists(tokens, max_size=4))
    literal = draw(st.none() | literals)
    tail = draw(st.lists(tokens, max_size=3)) if literal is not None else []
    text = b"* 1 FETCH (" + b" ".join(encode(t)[0] for t in head)
    expected = [parsed(t) for t in head] + ([literal] if literal is not None else []) + [parsed(t) for t in tail]
    if literal is None:
        return text + b")\r\n", [expected]
    wire = text + b" {%d}\r\n" % len(literal) + literal + b" " + b" ".join(encode(t)[0] for t in tail) + b")\r\n"
    return wire, [expected]


@settings(max_examples=200, deadline=None)
@given(st.lists(responses(), min_size=1, max_size=5), st.data())
def test_a_stream_split_at_random_parses_to_the_same_tokens(stream_responses, data):
    stream = b"".join(wire for wire, _ in stream_responses) + b"A1 OK done\r\n"
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=12))))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    whole = [classify(parts) for parts in read_responses([stream])]
    split = [classify(parts) for parts in read_responses(chunks)]
    assert [r.tokens() if isinstance(r, Untagged) else r for r in split] == [
        r.tokens() if isinstance(r, Untagged) else r for r in whole]
    assert [r.tokens() for r in whole[:-1]] == [expected for _, expected in stream_responses]
    assert whole[-1] == Tagged("OK", None, "done")


# ---------------------------------------------------------------- what goes back out: flags, strings, dates


@pytest.mark.parametrize("value", ["$Forwarded", "Project-X", "NonJunk", "a.b/c:d", "a[b", "~}|"])
def test_keywords_that_are_atoms_are_flags(value):
    assert flag(value) == value


@pytest.mark.parametrize("value", ["x)\nX1 DELETE \"Important\"", "{5}", "two words", 'say"hi"', "50%", "a*", "a]",
                                   "(", "tab\there", "日本", "esc\x1bx", "", "x" * 256, b"literal", None, ["list"],
                                   "\\Bogus", "\\Seen\r\nX1 EXPUNGE"])
def test_anything_else_is_not_a_flag(value):
    assert flag(value) is None


def test_system_flags_keep_their_usual_spelling():
    assert flag("\\SEEN") == "\\Seen" and flag("\\answered") == "\\Answered" and flag("\\Recent") == "\\Recent"


def test_a_flags_list_keeps_the_flags_and_names_what_it_dropped():
    assert flags_of(["\\Seen", "$Ok", "x\ny", b"{5}", ["nested"], None]) == (
        frozenset({"\\Seen", "$Ok"}), ("x\ny", "{5}", "(...)", ""))
    assert flags_of("\\Seen") == (frozenset(), ("\\Seen",))  # not a list at all
    assert flags_of(None) == (frozenset(), ())


def test_flags_are_written_only_when_every_one_is_a_flag():
    assert flag_list({"\\Seen", "$Ok"}) == b"($Ok \\Seen)"
    for bad in ("x\nX1 DELETE INBOX", "{5}", "\\seen"):
        with pytest.raises(ValueError, match="is not an IMAP flag"):
            flag_list({"\\Seen", bad})


def test_a_string_with_nul_cannot_be_written_in_any_form():
    with pytest.raises(ValueError, match="NUL"):
        quote("a\0b")


def test_dates_are_read_into_the_form_sent_back_and_anything_else_is_none():
    assert internaldate(" 7-Jul-1996 02:44:25 -0700") == "07-Jul-1996 02:44:25 -0700"
    assert internaldate("17-jul-1996 02:44:25 +0930") == "17-Jul-1996 02:44:25 +0930"
    for bad in ("31-Feb-2023 25:61:61 +9999", "yesterday", "0-Jan-0000 00:00:00 +0000", "17-Jul-1996 02:44:25",
                "17-Jul-1996 02:44:25 +2400", "", None, b"17-Jul-1996 02:44:25 -0700"):
        assert internaldate(bad) == ""
    assert date_time("17-Jul-1996 02:44:25 -0700") == b'"17-Jul-1996 02:44:25 -0700"'
    with pytest.raises(ValueError, match="is not an IMAP date-time"):
        date_time('1-Jan-2024" X1 DELETE "INBOX')


def test_server_text_is_shown_without_terminal_controls_and_cut():
    text = "\x1b]0;pwned\x07\x1b[2J\u202eevil\x9b31m\udcff ok é 日本"
    shown = printable(text)
    assert shown == "\\x1b]0;pwned\\x07\\x1b[2J\\u202eevil\\x9b31m\\udcff ok é 日本"
    assert printable("x" * 500, 10) == "x" * 10 + "..." and printable("x" * 500, None) == "x" * 500
    assert printable(shown) == shown


# ---------------------------------------------------------------- answers: bounded, and only what was asked



def session(stream: bytes, limits: Limits | None = None, *, endless: bytes = b""):
    """A connection whose server has sent ``stream`` (then ``endless`` over and over), selected on INBOX."""
    reader = asyncio.StreamReader(limit=1 << 24)
    reader.feed_data(stream)
    if endless:
        async def feed() -> None:
            while True:
                reader.feed_data(endless * 1000)
                await asyncio.sleep(0)
        asyncio.get_running_loop().create_task(feed())
    else:
        reader.feed_eof()
    connection = ImapConnection(reader, NullWriter(), "source test", timeout=5, limits=limits)
    connection.selected = "INBOX"
    return connection


def answer(coroutine_of):
    async def run():
        return await coroutine_of()
    return asyncio.run(run())


def test_fetch_answers_for_uids_not_asked_are_ignored_and_a_repeat_adds_nothing():
    body1, body3 = b"Subject: one\r\n\r\nx\r\n", b"Subject: three\r\n\r\ny\r\n"
    stream = (b"* 1 FETCH (UID 1 FLAGS (\\Seen) BODY[] {%d}\r\n%s)\r\n" % (len(body1), body1)
              + b"* 9 FETCH (UID 99 FLAGS () BODY[] {3}\r\nabc)\r\n"
              + b"* 1 FETCH (UID 1 FLAGS () BODY[] {5}\r\nother)\r\n"
              + b"* 3 FETCH (UID 3 FLAGS (\\Flagged) BODY[] {%d}\r\n%s)\r\n" % (len(body3), body3)
              + b"M1 OK done\r\n")
    messages = answer(lambda: session(stream).fetch_messages([1, 2, 3]))
    assert [(m.uid, m.body, m.flags) for m in messages] == [(1, body1, {"\\Seen"}), (3, body3, {"\\Flagged"})]


def test_a_listing_drops_invalid_flags_and_dates_and_says_so():
    stream = (b'* 1 FETCH (UID 4 FLAGS (\\Seen "x\nX1 DELETE INBOX" {5}) RFC822.SIZE lots INTERNALDATE "yesterday")\r\n'
              b"M1 OK done\r\n")
    [listed] = answer(lambda: session(stream).list_messages(start=1, details=True))
    assert (listed.uid, listed.flags, listed.size, listed.internaldate) == (4, {"\\Seen"}, 0, "")
    assert listed.problems == ("flag 'x\\x0aX1 DELETE INBOX' dropped: not an IMAP flag",
                               "flag '{5}' dropped: not an IMAP flag",
                               "its date (INTERNALDATE 'yesterday') is not a date: not carried")


def test_a_literal_over_the_largest_message_is_read_past_not_kept():
    big = b"x" * 3000
    stream = (b"* 1 FETCH (UID 1 BODY[] {3000}\r\n" + big + b")\r\n* 2 FETCH (UID 2 BODY[] {2}\r\nok)\r\n"
              b"M1 OK done\r\n")
    first, second = answer(lambda: session(stream, Limits(max_literal=1000)).fetch_messages([1, 2]))
    assert (first.body, second.body) == (b"", b"ok")
    assert first.not_kept == "3000 bytes, over the largest message this client holds (1000 bytes: --max-message-size)"


def test_bodies_past_what_was_announced_are_not_held():
    stream = b"".join(b"* %d FETCH (UID %d BODY[] {600}\r\n" % (n, n) + b"y" * 600 + b")\r\n" for n in (1, 2, 3))
    messages = answer(lambda: session(stream + b"M1 OK done\r\n", Limits(max_literal=1000))
                      .fetch_messages([1, 2, 3], expected_bytes=300))
    assert [len(m.body) for m in messages] == [600, 0, 0]
    assert messages[1].not_kept.startswith("the server sent more than it announced (RFC822.SIZE: 300 bytes")


def test_a_literal_larger_than_an_answer_may_be_stops_at_once():
    with pytest.raises(ServerMisbehaved, match="a literal of 4000000000 bytes for UID 1, more than the 268435456 bytes"):
        answer(lambda: session(b"* 1 FETCH (UID 1 BODY[] {4000000000}\r\n", endless=b"\0" * 1000).fetch_messages([1]))


def test_an_answer_larger_than_allowed_stops():
    with pytest.raises(ServerMisbehaved, match="more than 100000 bytes in answer to one command"):
        answer(lambda: session(b"", Limits(max_answer_bytes=100_000), endless=b"* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n")
               .list_messages([1]))


@pytest.mark.parametrize("flood", [b"* OK still here\r\n", b"* 1 FETCH (UID 99 FLAGS ())\r\n", b"+ go on\r\n",
                                   b"X9 OK not yours\r\n"])
def test_responses_that_are_no_answer_are_bounded(flood):
    with pytest.raises(ServerMisbehaved, match="more than 10000 responses that are no answer"):
        answer(lambda: session(b"", endless=flood).list_messages([1]))


def test_a_flood_of_answers_is_bounded_too():
    with pytest.raises(ServerMisbehaved, match="more than 5000 responses to one command"):
        answer(lambda: session(b"", Limits(max_responses=5000), endless=b"* 3 EXISTS\r\n").select("INBOX"))


def test_a_line_without_end_stops():
    with pytest.raises(ServerMisbehaved, match="a line longer than"):
        answer(lambda: session(b"* OK " + b"x" * (17 * 1024 * 1024)).capability())


def test_server_text_in_errors_is_printable():
    stream = b"M1 NO [NONEXISTENT] \x1b]0;pwned\x07\x1b[2Jgone\r\n"
    with pytest.raises(NoSuchFolder) as failure:
        answer(lambda: session(stream).select("Evil"))
    assert "\x1b" not in str(failure.value) and "\\x1b]0;pwned\\x07\\x1b[2Jgone" in str(failure.value)


@given(st.text(alphabet=st.characters(), max_size=40))
def test_printable_escapes_exactly_the_unsafe_characters(text):
    """Its fast path (text Python calls printable, returned as it is) gives what a look at each character gives."""
    unsafe = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}

    def escaped(c: str) -> str:
        code = ord(c)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"

    expected = "".join(escaped(c) if unicodedata.category(c) in unsafe else c for c in text)
    assert printable(text, None) == expected


def test_a_folder_name_imap_cannot_carry_fails_that_command_only():
    with pytest.raises(CommandFailed, match="cannot be named over IMAP"):
        answer(lambda: session(b"").status("a\0b"))


def test_malformed_list_entries_are_skipped():
    stream = (b'* LIST (\\HasNoChildren) "/"\r\n* LIST "garbage"\r\n* LIST () NIL NIL\r\n'
              b'* LIST (\\HasNoChildren) "//" "Sent"\r\n* LIST (\\Noselect) "/" "A"\r\nM1 OK done\r\n')
    folders = answer(lambda: session(stream).list_folders())
    assert [(f.name, f.delimiter, f.selectable) for f in folders] == [("Sent", None, True), ("A", "/", False)]


FLAG_BYTES = [bytes([b]) for b in range(0x21, 0x100) if b not in b'()[]"{}\x7f']
FLAG_WORD = st.one_of(st.sampled_from([b"\\Seen", b"\\Recent", b"\\Answered", b"\\Foo", b"$Label1", b"NIL", b"nil",
                                       "日本".encode(), b"\\*", b"a%b", b"x\x80y"]),
                      st.lists(st.sampled_from(FLAG_BYTES), min_size=1, max_size=6).map(b"".join))
DATES = st.sampled_from([b"01-Jan-2015 07:36:43 +0000", b" 7-Jul-1996 02:44:25 -0700", b"31-Feb-2020 10:00:00 +0000",
                         b"17-jul-1996 02:44:25 +0930", b"not a date", b"", "日本".encode()])


@settings(max_examples=500)
@given(st.integers(1, 2**32 - 1), st.lists(FLAG_WORD, max_size=5), st.integers(0, 10**12), DATES, st.booleans())
def test_a_plain_listing_answer_is_read_as_its_tokens_read_it(uid, flags, size, date, details):
    """A listing's answer in the plain form is read without its tokens (a shortcut): to the same record."""
    from mailstack.imap.client import _LISTED, _Listing

    line = b"* 3 FETCH (UID %d FLAGS (%s)" % (uid, b" ".join(flags))
    line += (b' RFC822.SIZE %d INTERNALDATE "%s")' % (size, date)) if details else b")"
    response = classify([line])
    assert _LISTED.fullmatch(line)  # the shortcut is taken
    listing = _Listing(lambda asked: True, details)
    assert listing(response) is True
    assert listing.result() == [_Listing(lambda asked: True, details)._record(uid, fetch_items(response.tokens()))]


@pytest.mark.parametrize("literal", [b"", b"Subject: x\r\n\r\nbody)\r\n", b"(UID 9 BODY[] {3}", None],
                         ids=["empty", "message", "looks-like-an-answer", "not-kept"])
def test_a_body_answer_is_read_as_its_tokens_read_it(literal):
    """A body asked alone (``UID n BODY[] {size}`` literal ``)``) is read without its tokens: to the same items."""
    from mailstack.imap.client import _BODY, _Fetched
    from mailstack.imap.wire import Unread

    body = Unread(5000, "too large") if literal is None else literal
    parts = [b"* 3 FETCH (UID 12 BODY[] {%d}" % len(body), body, b")"]
    assert _BODY.fullmatch(parts[0])
    fetched = _Fetched(lambda uid: True)
    assert fetched(classify(parts)) is True
    reference = fetch_items(classify(parts).tokens())
    assert fetched.items == {12: reference} and fetched.items[12]["BODY[]"] is body


# ---------------------------------------------------------------- pipelined commands: one write, answers by kind


class RecordingWriter(NullWriter):
    """A writer that keeps each write: what leaves in one send."""

    def __init__(self):
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        if data:
            self.writes.append(bytes(data))


def pipelined(stream: bytes, capabilities: set[str]) -> tuple[ImapConnection, RecordingWriter]:
    reader = asyncio.StreamReader(limit=1 << 20)
    reader.feed_data(stream)
    reader.feed_eof()
    writer = RecordingWriter()
    connection = ImapConnection(reader, writer, "source test", timeout=5)
    connection.capabilities = capabilities
    return connection, writer


def test_namespace_list_and_lsub_leave_in_one_write_and_answers_out_of_turn_are_told_apart_by_kind():
    stream = (b'* LIST (\\HasNoChildren) "/" "Sent"\r\n'     # LIST's answer before NAMESPACE completes
              b'* NAMESPACE (("" "/")) NIL NIL\r\n'
              b'* LSUB () "/" "Sent"\r\n'
              b'M1 OK NAMESPACE done\r\n'
              b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'
              b'* LSUB (\\Noselect) "/" "Archive"\r\n'
              b'M2 OK LIST done\r\nM3 OK LSUB done\r\n')

    async def go():
        connection, writer = pipelined(stream, {"IMAP4REV1", "NAMESPACE"})
        return await connection.folders(), writer

    (namespace, folders, subscribed), writer = answer(go)
    assert writer.writes == [b'M1 NAMESPACE\r\nM2 LIST "" "*"\r\nM3 LSUB "" "*"\r\n']
    assert (namespace.prefix, namespace.delimiter) == ("", "/")
    assert [f.name for f in folders] == ["Sent", "INBOX"]
    assert subscribed == {"Sent"}


def test_a_pipelined_command_refused_fails_after_every_answer_is_read_so_the_session_stays_in_step():
    stream = (b'M1 NO [SERVERBUG] no namespace today\r\n* LIST () "/" "INBOX"\r\nM2 OK\r\nM3 OK\r\n'
              b'* CAPABILITY IMAP4rev1 NAMESPACE\r\nM4 OK\r\n')

    async def go():
        connection, _ = pipelined(stream, {"IMAP4REV1", "NAMESPACE"})
        with pytest.raises(CommandFailed, match="no namespace today"):
            await connection.folders()
        return await connection.capability()  # read right after: M4's answer, not a leftover of M2 or M3

    assert answer(go) == {"IMAP4REV1", "NAMESPACE"}


def test_the_status_of_every_folder_leaves_in_one_write():
    stream = (b'* STATUS INBOX (UIDVALIDITY 1 UIDNEXT 5 MESSAGES 4)\r\nM1 OK\r\n'
              b'* STATUS Sent (UIDVALIDITY 2 UIDNEXT 3 MESSAGES 2)\r\nM2 OK\r\n')

    async def go():
        connection, writer = pipelined(stream, {"IMAP4REV1"})
        return await connection.statuses(["INBOX", "Sent"]), writer

    statuses, writer = answer(go)
    assert len(writer.writes) == 1 and writer.writes[0].count(b" STATUS ") == 2
    assert (statuses["INBOX"].uidnext, statuses["Sent"].messages) == (5, 2)


def test_a_folder_name_sent_as_a_literal_to_a_server_without_literal_plus_is_asked_after_the_pipelined_ones():
    name = "Ünterlagen"  # 8-bit: a literal, which without LITERAL+ waits for the server's "+"
    raw = name.encode()
    stream = (b'* STATUS INBOX (UIDVALIDITY 1 UIDNEXT 5 MESSAGES 4)\r\nM1 OK\r\n'
              b'* STATUS Sent (UIDVALIDITY 2 UIDNEXT 3 MESSAGES 2)\r\nM2 OK\r\n'
              b'+ go on\r\n'
              b'* STATUS {%d}\r\n%s (UIDVALIDITY 3 UIDNEXT 8 MESSAGES 7)\r\nM3 OK\r\n' % (len(raw), raw))

    async def go():
        connection, writer = pipelined(stream, {"IMAP4REV1"})
        return await connection.statuses(["INBOX", name, "Sent"]), writer

    statuses, writer = answer(go)
    assert {n: s.messages for n, s in statuses.items()} == {"INBOX": 4, name: 7, "Sent": 2}
    assert writer.writes[0] == b'M1 STATUS "INBOX" (UIDVALIDITY UIDNEXT MESSAGES)\r\nM2 STATUS "Sent" (UIDVALIDITY UIDNEXT MESSAGES)\r\n'
    assert b"".join(writer.writes[1:]) == b"M3 STATUS {%d}\r\n%s (UIDVALIDITY UIDNEXT MESSAGES)\r\n" % (len(raw), raw)


def test_pipelined_commands_answered_out_of_order_each_get_their_own_completion():
    stream = (b'* STATUS Sent (UIDVALIDITY 2 UIDNEXT 3 MESSAGES 2)\r\nM2 OK\r\n'   # the second, answered first
              b'* STATUS INBOX (UIDVALIDITY 1 UIDNEXT 5 MESSAGES 4)\r\nM1 OK\r\n'
              b'* CAPABILITY IMAP4rev1\r\nM3 OK\r\n')

    async def go():
        connection, _ = pipelined(stream, {"IMAP4REV1"})
        return await connection.statuses(["INBOX", "Sent"]), await connection.capability()

    statuses, capabilities = answer(go)
    assert {n: s.messages for n, s in statuses.items()} == {"INBOX": 4, "Sent": 2}
    assert capabilities == {"IMAP4REV1"}


def test_a_pipelined_command_refused_out_of_order_fails_alone():
    stream = (b'M2 NO [NONEXISTENT] no such folder\r\n'
              b'* STATUS INBOX (UIDVALIDITY 1 UIDNEXT 5 MESSAGES 4)\r\nM1 OK\r\n')

    async def go():
        connection, _ = pipelined(stream, {"IMAP4REV1"})
        return await connection.statuses(["INBOX", "Gone"])

    statuses = answer(go)
    assert statuses["INBOX"].messages == 4
    assert isinstance(statuses["Gone"], CommandFailed) and "no such folder" in str(statuses["Gone"])
