"""POP3 UIDLs kept across the migration, so that "leave a copy on the server" clients download nothing twice.

The old server's UIDL of each INBOX message is read over POP3 (``UIDL``, and
``TOP n 0`` for the header), matched to the IMAP message the sync copied (same
header), and the map of the new host's IMAP UIDs to the old UIDLs and POP3
message numbers is left in a private IMAP METADATA entry of the new INBOX.
The new host's POP3 post-login script (``templates/host/mailstack-pop3-uidls.j2``)
writes it into Dovecot's ``dovecot-uidlist`` (the P and O fields Dovecot serves
as UIDL and POP3 order) before the user's next POP3 session; the message bytes
are never changed. Everything travels over the two IMAP logins and the POP3
login the sync already has: nothing but the network reaches the new host.

Headers already read are kept next to the sync state (UIDL -> header digest),
so a second run asks the old server only for the messages that are new.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import poplib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mailstack.files import write_file
from mailstack.imap import ImapError
from mailstack.imap.client import tls_context
from mailstack.imap.endpoint import Endpoint, login
from mailstack.imap.wire import Literal, quote
from mailstack.sync.accounts import Account
from mailstack.sync.state import SyncState, state_file

ENTRY = "/private/vendor/vendor.mailstack/pop3-uidls"
TIMEOUT = 60.0


@dataclass(frozen=True)
class PopMessage:
    """One message as the old server's POP3 lists it."""

    number: int
    uidl: str
    header: str  # digest of its header lines


@dataclass
class UidlResult:
    """What one mailbox's UIDL carry did."""

    source_user: str
    target_user: str
    carried: int = 0
    listed: int = 0  # messages the old server lists over POP3
    unmatched: int = 0  # listed, but not (yet) copied to the new INBOX by the sync
    error: str | None = None

    def to_dict(self) -> dict:
        return dict(vars(self))


def header_digest(header: bytes) -> str:
    """A digest of a header section that POP3 TOP and IMAP BODY[HEADER] give alike (line ends and blank lines aside)."""
    lines = [line.rstrip() for line in header.replace(b"\r\n", b"\n").split(b"\n")]
    return hashlib.sha256(b"\n".join(line for line in lines if line)).hexdigest()


def match_uidls(pop: Sequence[PopMessage], imap_headers: dict[int, str]) -> dict[int, tuple[str, int]]:
    """{IMAP UID: (UIDL, POP3 number)}: each POP3 message paired with the IMAP message of the same header.

    Messages with the same header (exact duplicates) are paired in order: the
    n-th by POP3 number with the n-th by UID, both servers listing INBOX in
    arrival order.
    """
    by_header: dict[str, list[int]] = {}
    for uid in sorted(imap_headers):
        by_header.setdefault(imap_headers[uid], []).append(uid)
    matched = {}
    for message in sorted(pop, key=lambda m: m.number):
        uids = by_header.get(message.header)
        if uids:
            matched[uids.pop(0)] = (message.uidl, message.number)
    return matched


def metadata_value(uidvalidity: int, entries: dict[int, tuple[str, int]]) -> str:
    """The METADATA entry the host's post-login script reads: compact JSON on one line."""
    return json.dumps({"uidvalidity": uidvalidity, "uids": {str(uid): [uidl, number] for uid, (uidl, number)
                                                             in sorted(entries.items())}}, separators=(",", ":"))


# ------------------------------------------------------------------ shells (I/O)


class _Pop3(poplib.POP3):
    """POP3 to ``endpoint``: dials its address when given, checks TLS against its host name."""

    def __init__(self, endpoint: Endpoint):
        self._endpoint = endpoint
        super().__init__(endpoint.host, endpoint.port, timeout=TIMEOUT)

    def _create_socket(self, timeout):
        raw = socket.create_connection((self._endpoint.address or self._endpoint.host, self.port), timeout)
        if not self._endpoint.tls:
            return raw
        return tls_context(self._endpoint.cafile).wrap_socket(raw, server_hostname=self._endpoint.host)


def read_pop3(endpoint: Endpoint, user: str, password: str, known: dict[str, str]) -> list[PopMessage]:
    """Every message the old server lists over POP3 with its UIDL; headers not in ``known`` are read with TOP."""
    pop = _Pop3(endpoint)
    try:
        pop.user(user)
        pop.pass_(password)
        messages = []
        for line in pop.uidl()[1]:
            number, uidl = line.decode("ascii", "replace").split(maxsplit=1)
            if uidl not in known:
                known[uidl] = header_digest(b"\r\n".join(pop.top(int(number), 0)[1]))
            messages.append(PopMessage(int(number), uidl, known[uidl]))
        return messages
    finally:
        try:
            pop.quit()  # QUIT without DELE: nothing is deleted on the old server
        except (poplib.error_proto, OSError):
            pop.close()


def _cache_path(state_dir: Path, account: Account, source: Endpoint, target: Endpoint) -> Path:
    return state_file(state_dir, str(source), account.source_user, str(target), account.target_user).with_suffix(".pop3.json")


async def carry_uidls(account: Account, source: Endpoint, target: Endpoint, pop: Endpoint, state_dir: Path) -> UidlResult:
    """Leave the map of one POP user's copied INBOX messages to their old UIDLs on the new host."""
    result = UidlResult(account.source_user, account.target_user)
    cache = _cache_path(state_dir, account, source, target)
    try:
        known = json.loads(cache.read_text()) if cache.exists() else {}
        listed = await asyncio.to_thread(read_pop3, pop, account.source_user, account.source_password, known)
        write_file(cache, json.dumps(known), mode=0o600)
        state = SyncState(state_file(state_dir, str(source), account.source_user, str(target), account.target_user))
        try:
            inbox = state.load("INBOX")
        finally:
            state.close()
        copied = {uid: target_uid for uid, (target_uid, _) in inbox.synced.items()}
        headers = await _source_headers(source, account, sorted(copied))
        matched = match_uidls(listed, headers)
        entries = {copied[uid]: pair for uid, pair in matched.items()}
        result.listed, result.carried, result.unmatched = len(listed), len(entries), len(listed) - len(entries)
        if entries:
            await _leave_map(target, account, metadata_value(inbox.target_uidvalidity, entries))
    except (poplib.error_proto, OSError) as exc:
        result.error = f"old server POP3 {pop}: {exc}"
    except ImapError as exc:
        result.error = str(exc)
    return result


async def _source_headers(source: Endpoint, account: Account, uids: list[int]) -> dict[int, str]:
    if not uids:
        return {}
    imap = await login(source, account.source_user, account.source_password, "source", TIMEOUT)
    try:
        await imap.select("INBOX", readonly=True)
        return {uid: header_digest(header) for uid, header in (await imap.fetch_headers(uids)).items()}
    finally:
        await imap.logout()


async def _leave_map(target: Endpoint, account: Account, value: str) -> None:
    imap = await login(target, account.target_user, account.target_password, "target", TIMEOUT)
    try:
        # The map can exceed a command line (Dovecot's limit is 64 KB): it goes as a literal.
        await imap.command(b"SETMETADATA", b"INBOX", b"(" + quote(ENTRY), Literal(value.encode()), b")",
                           what="SETMETADATA")
    finally:
        await imap.logout()


def carry_all(accounts: Sequence[Account], source: Endpoint, target: Endpoint, pop: Endpoint, state_dir: Path,
              jobs: int = 4) -> list[UidlResult]:
    """Carry the UIDLs of every account, ``jobs`` at a time; results in the accounts' order."""

    async def run() -> list[UidlResult]:
        limit = asyncio.Semaphore(max(1, jobs))

        async def one(account: Account) -> UidlResult:
            async with limit:
                return await carry_uidls(account, source, target, pop, state_dir)

        return list(await asyncio.gather(*(one(a) for a in accounts)))

    return asyncio.run(run())
