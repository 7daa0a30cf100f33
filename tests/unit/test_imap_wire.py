"""The IMAP wire parser on its own: every response form the sync relies on, and a stream split anywhere."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from mailstack.imap.client import ImapConnection
from mailstack.imap.wire import (
    Literal,
    Tagged,
    Untagged,
    as_bytes,
    classify,
    fetch_items,
    parse_uid_set,
    quote,
    tag_of,
    uid_set,
)


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
