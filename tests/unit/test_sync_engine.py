"""The sync engine's own plumbing: what it runs at once on the two servers."""

from __future__ import annotations

import asyncio

import pytest

from mailstack.imap import ConnectionLost
from mailstack.sync.engine import _both


def test_when_one_of_two_sides_fails_the_other_is_stopped_and_the_failure_raised_as_it_is():
    stopped = []

    async def fails():
        await asyncio.sleep(0.01)
        raise ConnectionLost("source: connection lost")

    async def slow():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            stopped.append(True)
            raise

    async def go():
        assert await _both(asyncio.sleep(0, "a"), asyncio.sleep(0, "b")) == ["a", "b"]
        with pytest.raises(ConnectionLost, match="source: connection lost"):
            await asyncio.wait_for(_both(slow(), fails()), 5)
        assert stopped == [True] and len(asyncio.all_tasks()) == 1  # nothing left running but this test

    asyncio.run(go())
