"""Benchmark: the IMAP response tokenizer, per response, against the byte-by-byte reference it replaced.

Tokenizes realistic FETCH responses as the client hands them over (text, literal, text): a listing line
(UID, FLAGS, RFC822.SIZE, INTERNALDATE) and a message (UID, FLAGS, INTERNALDATE, BODY[] literal), each the way
Dovecot writes it; prints microseconds per response for both tokenizers, and checks they agree.

    .venv/bin/python bench/wire_bench.py [--responses 100000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
