"""The response tokenizer (``wire.parse_tokens``) against a plain byte-by-byte reading of the same grammar.

``reference_parse_tokens`` is the tokenizer as it was first written: one byte at a time, easy to check by eye.
The fast one must give exactly its tokens, for valid responses read as the client reads them (split at random
into network chunks, then into text and literal parts) and for any bytes at all.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstack.imap.client import ImapConnection
from mailstack.imap.wire import Untagged, classify, parse_tokens

_ATOM_END = frozenset(b" ()")


def reference_parse_tokens(parts: list[bytes], skip: int = 0) -> list:
    """Parse response parts (text, literal, text, ...) into nested tokens, one byte at a time."""
    root: list = []
    stack = [root]
    for index in range(0, len(parts), 2):
        text = parts[index]
        literal = parts[index + 1] if index + 1 < len(parts) else None
        i = skip if index == 0 else 0
        n = len(text)
        while i < n:
            c = text[i]
            if c == 0x20:
                i += 1
            elif c == 0x28:  # (
                new: list = []
                stack[-1].append(new)
                stack.append(new)
                i += 1
            elif c == 0x29:  # )
                if len(stack) > 1:
                    stack.pop()
                i += 1
            elif c == 0x22:  # "
                i += 1
                out = bytearray()
                while i < n and text[i] != 0x22:
                    if text[i] == 0x5C and i + 1 < n:
                        i += 1
                    out.append(text[i])
                    i += 1
                i += 1
                stack[-1].append(out.decode("utf-8", "surrogateescape"))
            elif c == 0x7B and literal is not None and text.endswith(b"}") and text.rfind(b"{") == i:
                stack[-1].append(literal)
                i = n
            else:
                start = i
                depth = 0
                while i < n:
                    c = text[i]
                    if c == 0x5B:
                        depth += 1
                    elif c == 0x5D:
                        depth -= 1
                    elif depth <= 0 and c in _ATOM_END:
                        break
                    i += 1
                atom = text[start:i].decode("utf-8", "surrogateescape")
                stack[-1].append(None if atom.upper() == "NIL" else atom)
    return root


def outcome(tokenize, parts: list[bytes], skip: int):
    """Tokens, or the type of the error raised."""
    try:
        return tokenize(parts, skip)
    except Exception as exc:  # whatever one raises, the other must raise too
        return type(exc)


# ---------------------------------------------------------------- valid responses, as the client reads them


def client_parts(chunks: list[bytes]) -> list[list[bytes]]:
    """The parts of every response in a stream arriving in ``chunks``, as the client splits them."""

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


ATOM_CHARS = "!#$&'*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz|}~%\\"


@st.composite
def atoms(draw) -> tuple[bytes, str | None]:
    """An atom (a flag, a number, NIL in any case, a body section with spaces and parentheses) and its token."""
    kind = draw(st.sampled_from(["plain", "number", "nil", "section"]))
    if kind == "number":
        text = str(draw(st.integers(0, 2**32)))
    elif kind == "nil":
        text = draw(st.sampled_from(["NIL", "nil", "Nil", "nIL"]))
    elif kind == "section":
        inside = draw(st.sampled_from(["", "HEADER", "1.2.MIME", "HEADER.FIELDS (MESSAGE-ID DATE)",
                                       "HEADER.FIELDS.NOT (X-A \"B\")", "TEXT"]))
        text = draw(st.sampled_from(["BODY", "BINARY", "BODY.PEEK"])) + f"[{inside}]" + draw(
            st.sampled_from(["", "<0>", "<10.2048>"]))
    else:
        text = draw(st.text(alphabet=ATOM_CHARS, min_size=1, max_size=12))
    return text.encode(), None if text.upper() == "NIL" else text


@st.composite
def quoted(draw) -> tuple[bytes, str]:
    """A quoted string (any bytes but CR and LF, 8-bit too), its quotes and backslashes escaped, others sometimes."""
    content = draw(st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")))
    out = b""
    for byte in content:
        char = bytes([byte])
        if char in (b'"', b"\\") or draw(st.integers(0, 9)) == 0:
            char = b"\\" + char
        out += char
    return b'"' + out + b'"', content.decode("utf-8", "surrogateescape")


@st.composite
def literals(draw) -> tuple[bytes, bytes]:
    """A literal: any bytes (CRLF, parentheses, a literal's announcement among them); ``{n+}`` now and then."""
    data = draw(st.binary(max_size=40) | st.sampled_from([b"", b")\r\n", b"x {3}\r\n", b'"\\', b"A1 OK\r\n"]))
    plus = b"+" if draw(st.integers(0, 4)) == 0 else b""
    return b"{%d%s}\r\n" % (len(data), plus) + data, data


def lists(children):
    return st.lists(children, max_size=4).map(
        lambda items: (b"(" + b" ".join(wire for wire, _ in items) + b")", [token for _, token in items]))


tokens = st.recursive(st.one_of(atoms(), quoted(), literals(), st.just((b"NIL", None))), lists, max_leaves=12)


@st.composite
def responses(draw) -> tuple[bytes, list]:
    """One untagged response (its wire bytes, ending in CRLF) and the tokens after its kind."""
    head = draw(st.sampled_from([b"* 12 FETCH", b"* 1 FETCH", b"* LIST", b"* STATUS", b"* NAMESPACE", b"* ESEARCH"]))
    items = draw(st.lists(tokens, max_size=5))
    spaces = [b" " * draw(st.integers(1, 2)) for _ in items]
    return head + b"".join(s + wire for s, (wire, _) in zip(spaces, items)) + b"\r\n", [t for _, t in items]


@settings(max_examples=400, deadline=None)
@given(st.lists(responses(), min_size=1, max_size=4), st.data())
def test_valid_responses_split_at_random_give_the_reference_tokens(stream_responses, data):
    stream = b"".join(wire for wire, _ in stream_responses)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=10))))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    read = client_parts(chunks)
    assert len(read) == len(stream_responses)
    for parts, (_, expected) in zip(read, stream_responses):
        response = classify(parts)
        assert isinstance(response, Untagged)
        skip = response._prefix_len()
        assert parse_tokens(parts, skip) == reference_parse_tokens(parts, skip) == expected
        assert response.tokens() == expected


# ---------------------------------------------------------------- anything at all: the same tokens, or the same error


SOUP = [b" ", b"  ", b"(", b")", b"[", b"]", b"{", b"}", b"{3}", b"{0+}", b"~{2}", b'"', b"\\", b'\\"', b"NIL",
        b"nil", b"n\xc4\xb1l", b"a", b"BODY[", b"0", b"\r", b"\n", b"\x00", b"\t",
        b"\xc3\xa9", b"\xc3", b"\xa9", b"\xe6\x97", b"\xa5", b"\xf0\x9f\x98", b"\x80", b"\xed\xa0\x80", b"\xff"]

texts = st.lists(st.sampled_from(SOUP), max_size=25).map(b"".join)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.one_of(texts, st.binary(max_size=30)), min_size=1, max_size=5), st.integers(0, 40))
def test_any_bytes_give_the_reference_tokens(parts, skip):
    assert outcome(parse_tokens, parts, skip) == outcome(reference_parse_tokens, parts, skip)


@pytest.mark.parametrize("parts", [
    [b'x "unclosed \\" {3}', b"abc", b")"],           # an unclosed quote runs to the end of its text: literal lost
    [b"x BODY[HEADER (A {3}", b"abc", b" B)"],        # an unclosed bracket does too
    [b"x ~{3}", b"abc", b""],                          # literal8 is not read as a literal
    [b"x a{3}", b"abc", b""],                          # nor a brace inside an atom
    [b"x {3} {4}", b"abcd", b""],                      # only the last brace of a text is a literal
    [b"x a]b[c d) e[[f]g]h i", b"lost", b"j"],         # brackets are counted, not paired
    [b'x "a\\', b"abc"],                               # a backslash at the very end stays
    [b"x ))) (a (b", None],                            # lists never closed are kept, extra ) ignored
    [b"x NIL nil n\xc4\xb1l \"NIL\" NILS", b"", b""],  # NIL in any case (as str.upper sees it) is None
])
def test_malformed_responses_read_as_the_reference_reads_them(parts):
    parts = [p for p in parts if p is not None]
    assert parse_tokens(parts, 1) == reference_parse_tokens(parts, 1)


def test_malformed_examples_give_these_tokens():
    assert parse_tokens([b'"unclosed \\" {3}', b"abc", b")"]) == ['unclosed " {3}']
    assert parse_tokens([b"BODY[HEADER (A {3}", b"abc", b" B)"]) == ["BODY[HEADER (A {3}", "B"]
    assert parse_tokens([b"~{3}", b"abc", b""]) == ["~{3}"]
    assert parse_tokens([b"a]b[c d) e[[f]g]h i j[[k] l"]) == ["a]b[c", "d", "e[[f]g]h", "i", "j[[k] l"]
    assert parse_tokens([b"))) (a (b NIL n\xc4\xb1l"]) == [["a", ["b", None, None]]]


def test_escapes_are_undone_on_the_bytes_even_between_those_of_one_character():
    assert parse_tokens([b'"\\\xc2\\\x80" "caf\xc3\xa9 \\"x\\"" "\xff\\\xfe"']) == ["\x80", 'café "x"', "\udcff\udcfe"]


@pytest.mark.parametrize("text", [b"a[b]" * 25_000 + b"[", b"[" * 100_000, b'"' + b"\\" * 100_000, b"] " * 50_000,
                                  b'"a ' * 33_000, b"BODY[x (y z)] " * 7_000, b"{ " * 50_000])
def test_a_long_hostile_line_is_read_in_time_linear_in_its_length(text):
    started = time.perf_counter()
    tokens = parse_tokens([b"* 1 FETCH " + text, b"lit", b" x"], 10)
    assert time.perf_counter() - started < 5  # about 0.05 s; a pattern that rescans from every byte takes minutes
    assert tokens == reference_parse_tokens([b"* 1 FETCH " + text, b"lit", b" x"], 10)
