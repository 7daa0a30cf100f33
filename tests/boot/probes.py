"""What a mail client sees of the host, from the network around it (run through ``Host.outside``).

The clients connect to the host's address and check its certificate against
its name, as a client that resolved the name would.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage

from tests.boot.netns import HOST_ADDRESS

MAIL_PORTS = (25, 465, 587, 993, 995)
CLIENT = "client.example.net"


def context(ca_pem: str) -> ssl.SSLContext:
    """A client context trusting only ``ca_pem``; names and chains are checked."""
    return ssl.create_default_context(cadata=ca_pem)


def _tls(port: int, ctx: ssl.SSLContext, host: str, timeout: float = 30) -> ssl.SSLSocket:
    return ctx.wrap_socket(socket.create_connection((HOST_ADDRESS, port), timeout), server_hostname=host)


def _smtp(port: int, ctx: ssl.SSLContext, host: str) -> smtplib.SMTP:
    """An SMTP session in TLS: STARTTLS on 25 and 587, implicit TLS on 465."""
    if port == 465:
        smtp = smtplib.SMTP(local_hostname=CLIENT, timeout=30)
        smtp.sock = _tls(465, ctx, host)
        smtp.file = None
        smtp.getreply()
        smtp.ehlo()
        return smtp
    smtp = smtplib.SMTP(HOST_ADDRESS, port, local_hostname=CLIENT, timeout=30)
    smtp._host = host  # the name STARTTLS checks the certificate against
    smtp.starttls(context=ctx)
    smtp.ehlo()
    return smtp


def certificate(port: int, ca_pem: str, host: str) -> dict:
    """The certificate the host presents on ``port``, verified against ``ca_pem`` and ``host``."""
    ctx = context(ca_pem)
    if port in (25, 465, 587):
        smtp = _smtp(port, ctx, host)
        try:
            return smtp.sock.getpeercert()
        finally:
            smtp.quit()
    with _tls(port, ctx, host) as tls:
        return tls.getpeercert()


def submit(ca_pem: str, host: str, user: str, password: str, to: str, subject: str) -> None:
    """Send one message on 587 with STARTTLS and AUTH, as a mail client does."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = user, to, subject
    message.set_content("sent through the booted host\n")
    smtp = _smtp(587, context(ca_pem), host)
    try:
        smtp.login(user, password)
        smtp.send_message(message)
    finally:
        smtp.quit()


class _IMAP(imaplib.IMAP4_SSL):
    """IMAPS (993) to the host's address, checking the certificate against its name."""

    def __init__(self, host: str, ctx: ssl.SSLContext):
        self._name = host
        super().__init__(HOST_ADDRESS, 993, ssl_context=ctx, timeout=30)

    def _create_socket(self, timeout):
        return _tls(993, self.ssl_context, self._name, timeout)


def imap_subjects(ca_pem: str, host: str, user: str, password: str) -> list[str]:
    """Subjects in the INBOX of ``user``, read over IMAPS."""
    imap = _IMAP(host, context(ca_pem))
    try:
        imap.login(user, password)
        imap.select("INBOX", readonly=True)
        _, data = imap.search(None, "ALL")
        subjects = []
        for number in data[0].split():
            _, parts = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            subjects.append(parts[0][1].decode().split(":", 1)[1].strip())
        return subjects
    finally:
        imap.logout()


def header(ca_pem: str, host: str, user: str, password: str, subject: str, field: str) -> str:
    """The ``field`` header of the INBOX message with ``subject`` ("" when absent)."""
    imap = _IMAP(host, context(ca_pem))
    try:
        imap.login(user, password)
        imap.select("INBOX", readonly=True)
        _, data = imap.search(None, "SUBJECT", f'"{subject}"')
        _, parts = imap.fetch(data[0].split()[-1], f"(BODY.PEEK[HEADER.FIELDS ({field})])")
        return parts[0][1].decode().strip()
    finally:
        imap.logout()


def wait_for_subject(ca_pem: str, host: str, user: str, password: str, subject: str, timeout: float = 30) -> bool:
    """True once a message with ``subject`` is in the INBOX (delivery takes a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subject in imap_subjects(ca_pem, host, user, password):
            return True
        time.sleep(0.5)
    return False


class _POP(poplib.POP3_SSL):
    """POP3S (995) to the host's address, checking the certificate against its name."""

    def __init__(self, host: str, ctx: ssl.SSLContext):
        self._name = host
        super().__init__(HOST_ADDRESS, 995, context=ctx, timeout=30)

    def _create_socket(self, timeout):
        return _tls(995, self.context, self._name, timeout)


def pop_count(ca_pem: str, host: str, user: str, password: str) -> int:
    """Log in over POP3S; the number of messages in the INBOX."""
    pop = _POP(host, context(ca_pem))
    try:
        pop.user(user)
        pop.pass_(password)
        return pop.stat()[0]
    finally:
        pop.quit()
