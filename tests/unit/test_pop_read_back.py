"""verify's POP3 read-back when another check expunges a message between the listing and its reading."""

from __future__ import annotations

import poplib

import pytest

from mailstack.checks.service import _pop_headers


class Pop:
    """A POP3 session whose message 2 was expunged by another session after LIST (Dovecot's answer)."""

    def __init__(self, answer: bytes = b"-ERR Message 2 expunged."):
        self.answer = answer

    def top(self, number: int, lines: int):
        if number == 2:
            raise poplib.error_proto(self.answer)
        return b"+OK", [f"X-Mailstack-Probe: p{number}".encode()], 0


def test_a_message_expunged_since_the_listing_is_read_as_empty_and_the_others_are_read():
    pop = Pop()
    assert [_pop_headers(pop, n) for n in (1, 2, 3)] == [b"X-Mailstack-Probe: p1", b"", b"X-Mailstack-Probe: p3"]


def test_any_other_error_still_fails_the_read():
    with pytest.raises(poplib.error_proto):
        _pop_headers(Pop(b"-ERR [SYS/TEMP] Internal error occurred."), 2)
