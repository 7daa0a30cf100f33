"""What a mail client must be told: the servers, ports and security of the new host, and each mailbox's values.

One source for every place these values appear: the Thunderbird autoconfig
and the Outlook Autodiscover files the host serves, the Apple profiles, the
settings sheets and the helpdesk CSV. Pure: settings and roster in, values out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from mailstack.stack.passwords import initial_password
from mailstack.stack.roster import GeneratePassword, Mailbox
from mailstack.stack.settings import Settings


@dataclass(frozen=True)
class Server:
    """One server a client connects to: ``kind`` imap, pop3 or smtp; ``security`` ssl (implicit TLS) or starttls."""

    kind: str
    host: str
    port: int
    security: str

    @property
    def security_shown(self) -> str:
        """The security as mail programs label it."""
        return "SSL/TLS" if self.security == "ssl" else "STARTTLS"


@dataclass(frozen=True)
class Servers:
    """The new host's client servers: IMAP and POP3 to read, SMTP submission to send (preferred first)."""

    imap: Server
    pop3: Server
    smtp: tuple[Server, ...]

    def incoming(self, protocol: str) -> Server:
        """The incoming server of a roster protocol (``imap`` or ``pop``)."""
        return self.pop3 if protocol == "pop" else self.imap


def mail_servers(host: str) -> Servers:
    """The servers of the new host: only TLS ports are open (993, 995, 465, 587 with STARTTLS)."""
    return Servers(
        imap=Server("imap", host, 993, "ssl"),
        pop3=Server("pop3", host, 995, "ssl"),
        smtp=(Server("smtp", host, 465, "ssl"), Server("smtp", host, 587, "starttls")),
    )


# How the mailbox's password is known to its sheet.
GENERATED = "generated"  # derived from the stack's seed: printed on the sheet
ASK_HELPDESK = "ask-helpdesk"  # generated, but the seed was not given: the helpdesk hands it out
UNCHANGED = "unchanged"  # a hash in the roster: the user keeps the password they have


@dataclass(frozen=True)
class Switch:
    """When mail moves: new mail reaches the new host from ``day``; the old account is kept until ``keep_old_until``."""

    day: date
    keep_old_until: date


def switch_dates(day: date, overlap_days: int) -> Switch:
    """The switch day and the end of the overlap (the stack's ``overlap_days`` later)."""
    return Switch(day, day + timedelta(days=overlap_days))


@dataclass(frozen=True)
class MailboxSettings:
    """Everything one employee's mail program needs, and what the sheet tells them."""

    address: str
    name: str
    protocol: str  # "imap" or "pop"
    incoming: Server
    outgoing: tuple[Server, ...]
    user_name: str
    password_status: str  # GENERATED, ASK_HELPDESK or UNCHANGED
    password: str | None = field(repr=False)  # only when GENERATED
    quota: str  # "2G" or "unlimited"
    domain: str
    old_server: str
    switch: Switch
    helpdesk: str


def mailbox_settings(mailbox: Mailbox, settings: Settings, switch: Switch, *, password_seed: str | None,
                     helpdesk: str | None = None) -> MailboxSettings:
    """The values of one mailbox. The password appears only when it is generated and the seed is given."""
    servers = mail_servers(settings.host.name)
    password, status = None, UNCHANGED
    if isinstance(mailbox.password, GeneratePassword):
        if password_seed:
            password, status = initial_password(password_seed, mailbox.address, mailbox.password.version), GENERATED
        else:
            status = ASK_HELPDESK
    return MailboxSettings(
        address=mailbox.address,
        name=mailbox.name,
        protocol=mailbox.protocol,
        incoming=servers.incoming(mailbox.protocol),
        outgoing=servers.smtp,
        # Dovecot and Postfix both log users in by their whole address.
        user_name=mailbox.address,
        password_status=status,
        password=password,
        quota=mailbox.quota_text,
        domain=mailbox.domain,
        old_server=settings.old_server.host,
        switch=switch,
        helpdesk=helpdesk or settings.contact,
    )
