"""Apple configuration profiles (.mobileconfig): one mail account per profile, for iPhone, iPad and macOS Mail.

A ``com.apple.mail.managed`` payload holds the incoming (IMAP or POP) and
outgoing (SMTP) servers. Without a password the device asks for it once when
the profile is installed. UUIDs are derived from the address, so a profile
made again replaces the installed one instead of adding a second account.
"""

from __future__ import annotations

import plistlib
import uuid

from mailstack.clients.values import MailboxSettings

_NAMESPACE = uuid.UUID("8f2f6a52-3f0e-4f5c-9a51-6d1f0c6a2e17")


def _identifier(domain: str) -> str:
    """A reverse-DNS identifier of the organisation (IDNA domains are ASCII already)."""
    return ".".join(reversed(domain.split("."))) + ".mailstack"


def mobileconfig(values: MailboxSettings, *, with_password: bool = False) -> bytes:
    """The profile of one mailbox as an XML plist; the password only with ``with_password`` (and when known)."""
    # Reverse-DNS identifiers hold no '@'.
    base = f"{_identifier(values.domain)}.{values.address.replace('@', '.at.')}"
    incoming, outgoing = values.incoming, values.outgoing[0]
    mail = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{base}.mail",
        "PayloadUUID": str(uuid.uuid5(_NAMESPACE, f"mail:{values.address}")).upper(),
        "PayloadDisplayName": values.address,
        "EmailAccountDescription": values.address,
        "EmailAccountName": values.name or values.address,
        "EmailAccountType": "EmailTypePOP" if values.protocol == "pop" else "EmailTypeIMAP",
        "EmailAddress": values.address,
        "IncomingMailServerHostName": incoming.host,
        "IncomingMailServerPortNumber": incoming.port,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerUsername": values.user_name,
        "OutgoingMailServerHostName": outgoing.host,
        "OutgoingMailServerPortNumber": outgoing.port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerUsername": values.user_name,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    if with_password and values.password:
        mail["IncomingPassword"] = values.password
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": base,
        "PayloadUUID": str(uuid.uuid5(_NAMESPACE, f"profile:{values.address}")).upper(),
        "PayloadDisplayName": f"Mail {values.address}",
        "PayloadDescription": f"Mail settings of {values.address} on {incoming.host}",
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [mail],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)
