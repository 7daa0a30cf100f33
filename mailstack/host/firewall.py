"""Which ports the new host opens to the internet, and why."""

from __future__ import annotations

from dataclasses import dataclass

from mailstack.stack.settings import Settings

ANYWHERE_V4 = "0.0.0.0/0"
ANYWHERE_V6 = "::/0"


@dataclass(frozen=True)
class IngressRule:
    """One TCP port open to the internet, with its reason."""

    port: int
    reason: str


MAIL_PORTS = (
    IngressRule(25, "SMTP: inbound mail from other servers (no AUTH)"),
    IngressRule(465, "SMTP submission over implicit TLS (RFC 8314), AUTH required"),
    IngressRule(587, "SMTP submission with STARTTLS, AUTH required"),
    IngressRule(993, "IMAP over TLS"),
    IngressRule(995, "POP3 over TLS"),
)
WEB_PORTS = (
    IngressRule(80, "HTTP: autoconfig for older clients, redirects to HTTPS"),
    IngressRule(443, "HTTPS: autoconfig/autodiscover and the MTA-STS policy"),
)


def ingress_rules(settings: Settings) -> tuple[IngressRule, ...]:
    """The ports open to 0.0.0.0/0 and ::/0: mail always, web only when served.

    SSH is never opened: operators reach the host through SSM Session Manager.
    """
    return MAIL_PORTS + (WEB_PORTS if settings.web else ())
