"""Deadlines of a run and of each mailbox: a server that drips answers cannot hold a run forever."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Coroutine


@dataclass(frozen=True)
class Deadline:
    """A moment (event loop time) after which work stops, and what to call it in the report."""

    at: float
    name: str
    seconds: float

    @classmethod
    def after(cls, seconds: float | None, name: str) -> "Deadline | None":
        """``seconds`` from now; None for no deadline."""
        return cls(asyncio.get_running_loop().time() + seconds, name, seconds) if seconds else None

    @staticmethod
    def first(*deadlines: "Deadline | None") -> "Deadline | None":
        present = [d for d in deadlines if d is not None]
        return min(present, key=lambda d: d.at) if present else None


async def before(deadline: Deadline | None, work: Coroutine) -> str | None:
    """Await ``work`` until ``deadline``: None when it finished in time, else what to report."""
    if deadline is None:
        await work
        return None
    if deadline.at <= asyncio.get_running_loop().time():
        work.close()
        return f"not started: {deadline.name} ({deadline.seconds:g} s) passed"
    try:
        async with asyncio.timeout_at(deadline.at):
            await work
    except TimeoutError:
        return f"not finished: {deadline.name} ({deadline.seconds:g} s) passed; run again to go on from here"
    return None
