"""Mail in the rehearsal: the old server filled with a corpus, mail delivered over SMTP, both sides compared.

The comparison is the rehearsal's verdict: per mailbox and folder, every
message of the old server is on the new one byte for byte, with equal flags
and arrival date, and none is there twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from mailstack.imap import ImapConnection, Message
from mailstack.imap.endpoint import Endpoint, login
from mailstack.imap.wire import format_internaldate
from mailstack.local.corpus import CorpusMessage
from mailstack.sync import plan

TIMEOUT = 60.0


async def _fill(endpoint: Endpoint, user: str, password: str, messages: list[CorpusMessage]) -> int:
    connection = await login(endpoint, user, password, "old server", TIMEOUT)
    try:
        namespace = await connection.namespace()
        by_folder: dict[str, list[CorpusMessage]] = {}
        for message in messages:
            by_folder.setdefault(message.folder, []).append(message)
        existing = {f.name for f in await connection.list_folders()}
        for folder, items in by_folder.items():
            wire = plan.wire_name(folder, namespace)
            parts = folder.split("/")
            for depth in range(1, len(parts) + 1):
                name = plan.wire_name("/".join(parts[:depth]), namespace)
                if name not in existing and name.upper() != "INBOX":
                    await connection.create(name)
                    await connection.subscribe(name)
                    existing.add(name)
            for start in range(0, len(items), 100):
                batch = [Message(0, frozenset(m.flags), format_internaldate(m.internaldate), m.body)
                         for m in items[start:start + 100]]
                await connection.append_many(wire, batch)
        return len(messages)
    finally:
        await connection.logout()


def fill_mailbox(endpoint: Endpoint, user: str, password: str, messages: list[CorpusMessage]) -> int:
    """APPEND the corpus to one mailbox of the old server (folders created and subscribed); how many were stored."""
    return asyncio.run(_fill(endpoint, user, password, messages))


def deliver(address: str, recipient: str, subject: str, *, cafile: str) -> str:
    """One message delivered over SMTP port 25 (STARTTLS) to the server at ``address``; its Message-ID."""
    message = EmailMessage()
    message["From"] = "partner@partner.example"
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = formatdate()
    message["Message-ID"] = make_msgid(domain="partner.example")
    message.set_content(f"{subject}\n\nDelivered during the rehearsal.\n")
    with smtplib.SMTP(address, 25, local_hostname="mx.partner.example", timeout=30) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=cafile))
        smtp.send_message(message)
    return message["Message-ID"]


# ---------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Stored:
    """One message as a server stores it: folder, digest of its bytes, flags, arrival date."""

    folder: str
    digest: str
    flags: frozenset[str]
    internaldate: str


async def _inventory(endpoint: Endpoint, user: str, password: str) -> list[Stored]:
    connection: ImapConnection = await login(endpoint, user, password, str(endpoint), TIMEOUT)
    stored = []
    try:
        namespace = await connection.namespace()
        for folder in await connection.list_folders():
            if not folder.selectable:
                continue
            name = plan.normal_name(folder.name, namespace)
            await connection.select(folder.name, readonly=True)
            listed = await connection.list_messages()
            uids = [m.uid for m in listed]
            for start in range(0, len(uids), 200):
                for message in await connection.fetch_messages(uids[start:start + 200]):
                    stored.append(Stored(name, hashlib.sha256(message.body).hexdigest(), message.flags,
                                         message.internaldate))
    finally:
        await connection.logout()
    return stored


def inventory(endpoint: Endpoint, user: str, password: str) -> list[Stored]:
    """Every message of a mailbox, read-only (BODY.PEEK: nothing becomes \\Seen)."""
    return asyncio.run(_inventory(endpoint, user, password))


@dataclass
class MailboxVerdict:
    """Old against new for one mailbox."""

    mailbox: str
    old_messages: int = 0
    new_messages: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    flags_differ: list[str] = field(default_factory=list)
    dates_differ: list[str] = field(default_factory=list)
    only_new: int = 0

    @property
    def exact(self) -> bool:
        return not (self.lost or self.duplicated or self.flags_differ or self.dates_differ)

    def to_dict(self) -> dict:
        return {"mailbox": self.mailbox, "old_messages": self.old_messages, "new_messages": self.new_messages,
                "lost": len(self.lost), "duplicated": len(self.duplicated), "flags_differ": len(self.flags_differ),
                "dates_differ": len(self.dates_differ), "only_on_new": self.only_new, "exact": self.exact,
                "examples": (self.lost + self.duplicated + self.flags_differ + self.dates_differ)[:5]}


def compare(mailbox: str, old: list[Stored], new: list[Stored]) -> MailboxVerdict:
    """Every old message on the new side exactly once, with its flags and date; mail only on the new side is fine.

    Messages are matched by folder and the digest of their bytes; a message the
    old side holds twice must be on the new side twice.
    """
    verdict = MailboxVerdict(mailbox, len(old), len(new))
    old_count = Counter((m.folder, m.digest) for m in old)
    new_count = Counter((m.folder, m.digest) for m in new)
    new_by_key = {(m.folder, m.digest): m for m in new}
    for key, count in old_count.items():
        folder, digest = key
        if new_count[key] < count:
            verdict.lost.append(f"{folder}: message {digest[:12]} missing on the new host")
    for key, count in new_count.items():
        folder, digest = key
        if count > max(old_count[key], 1):
            verdict.duplicated.append(f"{folder}: message {digest[:12]} {count} times on the new host")
        if not old_count[key]:
            verdict.only_new += count
    for message in old:
        twin = new_by_key.get((message.folder, message.digest))
        if twin is None or old_count[(message.folder, message.digest)] != 1:
            continue
        if twin.flags != message.flags:
            verdict.flags_differ.append(f"{message.folder}: message {message.digest[:12]} flags "
                                        f"{sorted(message.flags)} became {sorted(twin.flags)}")
        if twin.internaldate != message.internaldate:
            verdict.dates_differ.append(f"{message.folder}: message {message.digest[:12]} arrival "
                                        f"{message.internaldate} became {twin.internaldate}")
    return verdict
