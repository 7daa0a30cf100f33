"""A server silent for longer than the timeout is given up, wherever in a response it stops; one that keeps
talking is not, however long its answer takes."""

from __future__ import annotations

import asyncio

import pytest

from mailstack.imap.client import ConnectionLost, ImapConnection
from tests.conftest import NullWriter

TIMEOUT = 0.3



async def talking(*pieces: tuple[float | None, bytes]):
    """A connection whose server sends each piece after its delay (seconds; None: before the client reads at all),
    then says nothing more."""
    reader = asyncio.StreamReader(limit=1 << 20)
    for delay, data in pieces:
        if delay is None:
            reader.feed_data(data)

    async def server() -> None:
        for delay, data in pieces:
            if delay is not None:
                await asyncio.sleep(delay)
                reader.feed_data(data)

    feeding = asyncio.get_running_loop().create_task(server())
    connection = ImapConnection(reader, NullWriter(), "source test", timeout=TIMEOUT)
    connection.selected = "INBOX"
    return connection, feeding


def run(*pieces: tuple[float | None, bytes], fetch=lambda c: c.fetch_messages([1, 2])):
    async def go():
        connection, feeding = await talking(*pieces)
        try:
            async with asyncio.timeout(10):  # a client that never gives up fails here, not by hanging the tests
                return await fetch(connection)
        finally:
            feeding.cancel()
    return asyncio.run(go())


@pytest.mark.parametrize("sent", [
    b"",                                                    # nothing at all
    b"* 1 FETCH (UID 1 FLAGS (\\Seen)",                     # part of a line, its end never comes
    b"* 1 FETCH (UID 1 BODY[] {100}\r\n" + b"x" * 10,      # part of a literal
    b"* 1 FETCH (UID 1 BODY[] {3}\r\nabc",                 # a whole literal, but not the line after it
    b"* 1 FETCH (UID 1 BODY[] {3}\r\nabc)\r\n",             # whole responses, but never the tagged one
])
@pytest.mark.parametrize("when", [None, 0], ids=["buffered", "arriving"])
def test_a_server_silent_for_longer_than_the_timeout_is_given_up(sent, when):
    with pytest.raises(ConnectionLost, match=r"^source test: no answer for 0 s$"):
        run((when, sent))


def test_a_server_that_keeps_talking_is_waited_for_however_long_it_takes():
    body = b"Subject: slow\r\n\r\n" + b"y" * 40
    pieces = [(0, b"* 1 FETCH (UID 1 FLAGS (\\Seen) BODY[] {%d}\r\n" % len(body))]
    pieces += [(TIMEOUT / 3, body[i:i + 10]) for i in range(0, len(body), 10)]
    pieces += [(TIMEOUT / 3, b")\r\n"), (TIMEOUT / 3, b"* 2 FETCH (UID 2 BODY[] {2}\r\nok)\r\n"),
               (TIMEOUT / 3, b"M1 OK "), (TIMEOUT / 3, b"done\r\n")]
    assert sum(delay for delay, _ in pieces) > 2 * TIMEOUT
    messages = run(*pieces)
    assert [(m.uid, m.body) for m in messages] == [(1, body), (2, b"ok")]


def test_a_server_that_sent_everything_at_once_is_read_without_waiting():
    stream = b"".join(b"* %d FETCH (UID %d FLAGS () BODY[] {2}\r\nok)\r\n" % (n, n) for n in (1, 2)) + b"M1 OK done\r\n"
    messages = run((None, stream))
    assert [(m.uid, m.body) for m in messages] == [(1, b"ok"), (2, b"ok")]
