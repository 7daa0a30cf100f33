"""A realistic generated mail corpus for rehearsals and benchmarks: what an old server's mailboxes hold.

Pure and deterministic for a given seed: folders with Japanese and nested
names, read/answered/flagged messages, keywords, attachments, ISO-2022-JP and
UTF-8 bodies, messages without a Message-ID, arrival dates over two years.
"""

from __future__ import annotations

import base64
import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.header import Header

FOLDERS = ("INBOX", "Sent", "Archive/2025", "取引先", "取引先/見積", "Drafts")
KEYWORDS = ("$Forwarded", "$Label1", "$Label2", "Important", "$MDNSent", "Project-A")
SUBJECTS = ("Meeting notes", "Invoice", "お見積りのご依頼", "Re: shipping schedule", "週報", "Contract draft",
            "Fwd: 請求書", "Quarterly report", "ご挨拶", "Server maintenance")


@dataclass(frozen=True)
class CorpusMessage:
    """One message to place on the old server: folder (``/`` between levels), bytes, flags, arrival date."""

    folder: str
    body: bytes
    flags: tuple[str, ...]
    internaldate: datetime


def _attachment(rng: random.Random, size: int) -> bytes:
    data = rng.randbytes(size)
    lines = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (b"--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"doc.pdf\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + lines)


def message_bytes(rng: random.Random, sender: str, recipient: str, date: datetime, index: int) -> bytes:
    """One RFC 5322 message; about one in seven has no Message-ID, one in ten an attachment."""
    subject = rng.choice(SUBJECTS)
    encoded_subject = subject if subject.isascii() else Header(subject, "utf-8").encode()
    headers = [
        f"From: {sender}",
        f"To: {recipient}",
        f"Subject: {encoded_subject}",
        f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
        "MIME-Version: 1.0",
    ]
    if index % 7:
        digest = hashlib.sha1(f"{recipient}/{index}".encode()).hexdigest()[:16]
        headers.append(f"Message-ID: <{digest}.{index}@old.example>")
    text = f"{subject}\r\n\r\n" + "本文の行です。This is line {n} of the message.\r\n" * rng.randint(3, 40)
    text = text.replace("{n}", str(index))
    if index % 10 == 3:
        headers.append('Content-Type: multipart/mixed; boundary="b1"')
        body = (b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                + text.encode() + b"\r\n" + _attachment(rng, rng.randint(2_000, 60_000)) + b"--b1--\r\n")
    else:
        headers.append("Content-Type: text/plain; charset=utf-8")
        headers.append("Content-Transfer-Encoding: 8bit")
        body = text.encode()
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def _flags(rng: random.Random) -> tuple[str, ...]:
    flags = set()
    if rng.random() < 0.7:
        flags.add("\\Seen")
    if rng.random() < 0.15:
        flags.add("\\Answered")
    if rng.random() < 0.08:
        flags.add("\\Flagged")
    if rng.random() < 0.2:
        flags.add(rng.choice(KEYWORDS))
    return tuple(sorted(flags))


def mailbox_corpus(address: str, count: int, *, seed: str, now: datetime | None = None) -> list[CorpusMessage]:
    """``count`` messages for one mailbox, spread over :data:`FOLDERS`, deterministic for ``seed``."""
    rng = random.Random(f"{seed}/{address}")
    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    messages = []
    for index in range(count):
        folder = FOLDERS[0] if index % 3 == 0 else rng.choice(FOLDERS)
        date = now - timedelta(days=rng.uniform(1, 730))
        date = date.replace(microsecond=0)
        sender = f"partner{rng.randint(1, 40)}@partner.example"
        body = message_bytes(rng, sender if folder != "Sent" else address,
                             address if folder != "Sent" else sender, date, index)
        flags = ("\\Seen",) if folder == "Sent" else _flags(rng)
        messages.append(CorpusMessage(folder, body, flags, date))
    return messages


def split_evenly(total: int, mailboxes: int) -> list[int]:
    """``total`` messages over ``mailboxes`` mailboxes, the first ones getting the remainder."""
    base, extra = divmod(total, mailboxes) if mailboxes else (0, 0)
    return [base + (1 if i < extra else 0) for i in range(mailboxes)]
