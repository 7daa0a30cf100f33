"""The roster's model: mailboxes with their quota, aliases, protocol and password (a hash or ``generate``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from mailstack.stack.quota import format_quota


@dataclass(frozen=True)
class PasswordHash:
    """A Dovecot password hash: ``scheme`` such as ``SHA512-CRYPT``, ``value`` the crypt string."""

    scheme: str
    value: str

    def dovecot(self) -> str:
        """The hash as Dovecot's passdb wants it: ``{SCHEME}value``."""
        return f"{{{self.scheme}}}{self.value}"


@dataclass(frozen=True)
class GeneratePassword:
    """The host gets a generated initial password; bumping ``version`` rotates it."""

    version: int = 1


Password = PasswordHash | GeneratePassword


@dataclass(frozen=True)
class Mailbox:
    """One mailbox to create on the new host."""

    address: str
    name: str
    quota: int | None  # bytes; None means unlimited
    protocol: str  # "imap" or "pop": the client protocol on the user's settings sheet
    aliases: tuple[str, ...]
    password: Password
    where: str  # "path:line" (or "path:row N") of its row, for later messages

    @property
    def domain(self) -> str:
        """The mail domain of the address (an A-label for IDNA domains)."""
        return self.address.rpartition("@")[2]

    @property
    def quota_text(self) -> str:
        """The quota as a Dovecot quota-rule size (``2G``), or ``unlimited``."""
        return "unlimited" if self.quota is None else format_quota(self.quota)


@dataclass(frozen=True)
class Roster:
    """The validated mailboxes of one roster file."""

    mailboxes: tuple[Mailbox, ...]
    source: str

    def __len__(self) -> int:
        return len(self.mailboxes)

    def __iter__(self) -> Iterator[Mailbox]:
        return iter(self.mailboxes)

    def domains(self) -> set[str]:
        """Every domain the roster receives mail for: its addresses' and aliases' domains."""
        return {address.rpartition("@")[2] for m in self.mailboxes for address in (m.address, *m.aliases)}
