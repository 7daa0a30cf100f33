"""The one endpoint type: where a mail server is (scheme, host, port), what to trust, where to dial; and its login."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from mailstack.stack.domains import normalise_domain

DEFAULT_PORTS = {"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995}
IMAP_SCHEMES = ("imap", "imaps")
POP_SCHEMES = ("pop3", "pop3s")


@dataclass(frozen=True)
class Endpoint:
    """A mail server endpoint such as ``imaps://mail.example.net:993``.

    ``cafile`` adds CA certificates to trust besides the system's; ``address``
    is dialled instead of resolving ``host`` (the certificate is still checked
    against ``host``).
    """

    scheme: str
    host: str
    port: int
    cafile: str | None = None
    address: str | None = None

    @property
    def tls(self) -> bool:
        return self.scheme.endswith("s")

    def trusting(self, cafile: str | None = None, address: str | None = None) -> "Endpoint":
        """The same endpoint with a CA file to trust and an address to dial (``None`` keeps the current one)."""
        return replace(self, cafile=cafile or self.cafile, address=address or self.address)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_endpoint(value: str, schemes: tuple[str, ...] = IMAP_SCHEMES) -> Endpoint:
    """Parse ``scheme://host[:port]`` for one of ``schemes``; the port defaults by scheme.

    Raises ``ValueError`` with a message naming the value and what is wrong.
    """
    if not isinstance(value, str) or "://" not in value:
        raise ValueError(f"{value!r} is not an endpoint like {schemes[-1]}://mail.example.net")
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ValueError(f"{value!r}: scheme must be one of {', '.join(schemes)}")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ValueError(f"{value!r}: the port is not a number from 1 to 65535") from None
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host = normalise_domain(host, example="mail.example.com")
        except ValueError as exc:
            raise ValueError(f"{host!r} {exc}") from None
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError(f"{value!r}: give only scheme, host and port")
    return Endpoint(parts.scheme, host, port)


async def login(endpoint: Endpoint, user: str, password: str, side: str, timeout: float, limits=None):
    """An IMAP connection to ``endpoint``, logged in as ``user``; ``side`` names it in errors ("source", ...).

    ``limits`` (:class:`mailstack.imap.client.Limits`) bounds what the server's answers may make it hold.
    """
    from mailstack.imap.client import ImapConnection, ImapError

    connection = await ImapConnection.open(endpoint.host, endpoint.port, tls=endpoint.tls, cafile=endpoint.cafile,
                                           timeout=timeout, where=f"{side} {endpoint}", address=endpoint.address,
                                           limits=limits)
    try:
        await connection.login(user, password)
    except ImapError:
        connection.close()
        raise
    return connection
