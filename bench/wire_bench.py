"""Benchmark: the IMAP response tokenizer, per response, against the byte-by-byte reference it replaced.

Tokenizes realistic FETCH responses as the client hands them over (text, literal, text): a listing line
(UID, FLAGS, RFC822.SIZE, INTERNALDATE) and a message (UID, FLAGS, INTERNALDATE, BODY[] literal), each the way
Dovecot writes it; prints microseconds per response for both tokenizers, and checks they agree. Then the
client's whole response path without a server: the same responses fed to a connection from memory, listed
(list_messages) and fetched (fetch_messages), CPU per message.

    .venv/bin/python bench/wire_bench.py [--responses 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from mailstack.imap.client import ImapConnection  # noqa: E402
from mailstack.imap.wire import classify, fetch_items, parse_tokens  # noqa: E402
from tests.unit.test_wire_tokenizer import reference_parse_tokens  # noqa: E402

FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "$Forwarded", "$Label1", "Important")
BODY = b"Subject: x\r\n\r\n" + b"y" * 4000  # one body for all: a literal is handed on, never scanned
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def fetch_responses(count: int, seed: int = 2024) -> dict[str, list[list[bytes]]]:
    """``count`` listing responses and ``count`` message responses, as parts."""
    rng = random.Random(seed)
    listing, message = [], []
    for n in range(1, count + 1):
        flags = " ".join(f for f in FLAGS if rng.random() < 0.3)
        date = (f"{rng.randint(1, 28):02d}-{rng.choice(MONTHS)}-{rng.randint(2015, 2024)} "
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} +0000")
        size = int(rng.lognormvariate(8.5, 0.8))
        listing.append([f'* {n} FETCH (UID {n} FLAGS ({flags}) RFC822.SIZE {size} INTERNALDATE "{date}")'.encode()])
        message.append([f'* {n} FETCH (UID {n} FLAGS ({flags}) INTERNALDATE "{date}" BODY[] {{{len(BODY)}}}'.encode(),
                        BODY, b")"])
    return {"listing (UID FLAGS RFC822.SIZE INTERNALDATE)": listing, "message (UID FLAGS INTERNALDATE BODY[])": message}


def per_response(tokenize, responses: list[tuple[list[bytes], int]]) -> float:
    """Microseconds per response (best of three)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for parts, skip in responses:
            tokenize(parts, skip)
        best = min(best, time.perf_counter() - started)
    return best / len(responses) * 1e6


class _Nowhere:
    """The connection's writer: the server's answers are fed to its reader instead."""

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        pass


def client_path(responses: dict[str, list[list[bytes]]]) -> float:
    """CPU seconds for one connection to list, then fetch, every message of ``responses`` (best of three)."""
    listing, message = responses.values()
    streams = (b"".join(parts[0] + b"\r\n" for parts in listing) + b"M1 OK done\r\n",
               b"".join(parts[0] + b"\r\n" + parts[1] + parts[2] + b"\r\n" for parts in message) + b"M1 OK done\r\n")

    async def connection(stream: bytes) -> ImapConnection:
        reader = asyncio.StreamReader(limit=1 << 24)

        async def server() -> None:  # as a socket hands it over: 64 KB at a time
            for start in range(0, len(stream), 65536):
                reader.feed_data(stream[start:start + 65536])
                await asyncio.sleep(0)

        asyncio.get_running_loop().create_task(server())
        opened = ImapConnection(reader, _Nowhere(), "bench", timeout=60)
        opened.selected = "INBOX"
        return opened

    async def run() -> None:
        listed = await (await connection(streams[0])).list_messages(start=1, details=True)
        fetching = await connection(streams[1])
        fetched = await fetching.fetch_messages(range(1, len(message) + 1), expected_bytes=1 << 40)
        assert len(listed) == len(fetched) == len(message)

    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        asyncio.run(run())
        best = min(best, time.process_time() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--responses", type=int, default=100_000, help="of each kind")
    args = parser.parse_args()
    print(f"{'response':<48} {'reference':>10} {'parse_tokens':>13} {'speed-up':>9}")
    for kind, responses in fetch_responses(args.responses).items():
        prepared = [(parts, classify(parts)._prefix_len()) for parts in responses]
        for parts, skip in prepared[:1000]:
            if parse_tokens(parts, skip) != reference_parse_tokens(parts, skip):
                print(f"{kind}: the tokenizers disagree on {parts[0]!r}")
                return 1
        fetch_items(parse_tokens(*prepared[0]))
        reference = per_response(reference_parse_tokens, prepared)
        fast = per_response(parse_tokens, prepared)
        print(f"{kind:<48} {reference:>8.2f} µs {fast:>10.2f} µs {reference / fast:>8.1f}x")
    count = min(args.responses, 20_000)
    cpu = client_path(fetch_responses(count))
    print(f"client: {count} messages listed then fetched, fed from memory: {cpu:.2f} s CPU, "
          f"{cpu / count * 1e6:.0f} µs per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
