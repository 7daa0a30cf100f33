"""The reverse sync after a rollback: the mail that reached the new host during the cutover, back to the old server.

The same engine, state and fidelity as the forward sync, with the sides
swapped: each account's target (the new host) is read and its source (the old
server) written. The state file is keyed by both sides, so the reverse sync
keeps its own state. Messages the forward sync copied are recognised on the
old server by their fingerprint (size, date, header digest) and not copied
back; only what arrived on the new host (or changed flags there) is.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from mailstack.imap.endpoint import Endpoint
from mailstack.sync.accounts import Account
from mailstack.sync.engine import MailboxResult, SyncOptions, run_sync


def reversed_accounts(accounts: Sequence[Account]) -> list[Account]:
    """Each account with its sides swapped: read as the target user, written as the source user."""
    return [Account(a.target_user, a.target_password, a.source_user, a.source_password, a.where) for a in accounts]


def waiting_on_new_host(accounts: Sequence[Account], old: Endpoint, new: Endpoint,
                        options: SyncOptions) -> list[MailboxResult]:
    """What a reverse sync would copy back now, per account (a dry run: nothing is changed)."""
    return run_sync(reversed_accounts(accounts), new, old, replace(options, dry_run=True))
