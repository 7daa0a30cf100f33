"""Checks of the host's services, speaking the real protocols as a user's client would."""

from __future__ import annotations

import hashlib
import imaplib
import poplib
import smtplib
import socket
import ssl
import time
import uuid
import warnings
from datetime import datetime, timezone
from email.message import EmailMessage

from mailstack.checks import Result, Target, error, ok, warning

PORTS = {25: "SMTP (inbound mail)", 465: "submission over TLS", 587: "submission with STARTTLS",
         993: "IMAP over TLS", 995: "POP3 over TLS"}
TIMEOUT = 10.0
CERT_WARNING_DAYS = 21
CERT_ERROR_DAYS = 7


def _address(target: Target) -> str:
    return target.address or target.host


def tls_context(target: Target) -> ssl.SSLContext:
    """A client context verifying the host's certificate (against ``cafile`` when given)."""
    return ssl.create_default_context(cafile=target.cafile)


def _connect(target: Target, port: int) -> socket.socket:
    return socket.create_connection((_address(target), port), timeout=TIMEOUT)


# Clients that connect to ``target.address`` but check the certificate against the host name.

class _SMTP(smtplib.SMTP):
    def __init__(self, target: Target, port: int):
        self._target = target
        super().__init__(timeout=TIMEOUT)
        self._host = target.host  # the name TLS checks the certificate against (smtplib keeps it from __init__)
        self.connect(target.host, port)

    def _get_socket(self, host, port, timeout):
        return _connect(self._target, port)


class _SMTPS(smtplib.SMTP_SSL):
    def __init__(self, target: Target, port: int = 465):
        self._target = target
        super().__init__(timeout=TIMEOUT, context=tls_context(target))
        self._host = target.host
        self.connect(target.host, port)

    def _get_socket(self, host, port, timeout):
        return self.context.wrap_socket(_connect(self._target, port), server_hostname=self._host)


def login_once(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """SMTP AUTH with one mechanism, PLAIN if offered, else LOGIN.

    smtplib's ``login`` tries each mechanism the server offers in turn, so a
    wrong password would cost one failed login per mechanism against the
    host's limit of failed logins per account.
    """
    smtp.ehlo_or_helo_if_needed()
    offered = smtp.esmtp_features.get("auth", "").upper().split()
    mechanism = next((m for m in ("PLAIN", "LOGIN") if m in offered), None)
    if mechanism is None:
        raise smtplib.SMTPNotSupportedError(f"the server offers no AUTH PLAIN or LOGIN (it offers: "
                                            f"{' '.join(offered) or 'no AUTH at all'})")
    smtp.user, smtp.password = user, password
    smtp.auth(mechanism, getattr(smtp, f"auth_{mechanism.lower()}"))


class _IMAPS(imaplib.IMAP4_SSL):
    def __init__(self, target: Target, port: int = 993):
        self._target = target
        super().__init__(target.host, port, ssl_context=tls_context(target), timeout=TIMEOUT)

    def _create_socket(self, timeout):
        return self.ssl_context.wrap_socket(_connect(self._target, self.port), server_hostname=self.host)


class _POP3S(poplib.POP3_SSL):
    def __init__(self, target: Target, port: int = 995):
        self._target = target
        super().__init__(target.host, port, context=tls_context(target), timeout=TIMEOUT)

    def _create_socket(self, timeout):
        return self.context.wrap_socket(_connect(self._target, self.port), server_hostname=self.host)


# ---------------------------------------------------------------------- checks


def ports(target: Target) -> list[Result]:
    """Each mail port accepts a connection."""
    results = []
    for port, what in PORTS.items():
        try:
            _connect(target, port).close()
            results.append(ok(f"port {port}", f"{what} answers"))
        except OSError as exc:
            results.append(error(f"port {port}", f"{what} does not answer: {exc}",
                                 f"check that the security group opens {port} and that "
                                 f"{'postfix' if port in (25, 465, 587) else 'dovecot'} runs on the host"))
    return results


def judge_certificate(host: str, not_after: datetime, now: datetime) -> Result:
    """A verified certificate: enough days left?"""
    days = (not_after - now).total_seconds() / 86400
    detail = f"valid for {host} until {not_after:%Y-%m-%d} ({days:.0f} days left)"
    if days < CERT_ERROR_DAYS:
        return error("certificate", detail, "renew it now: certbot renew on the host, then reload postfix and dovecot")
    if days < CERT_WARNING_DAYS:
        return warning("certificate", detail, "renewal is overdue: check the certbot timer on the host")
    return ok("certificate", detail)


def certificate(target: Target) -> list[Result]:
    """The certificate on 993 is trusted, names the host and is not near expiry."""
    try:
        with _connect(target, 993) as raw, tls_context(target).wrap_socket(raw, server_hostname=target.host) as tls:
            der = tls.getpeercert(binary_form=True)
            not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(tls.getpeercert()["notAfter"]), timezone.utc)
    except ssl.SSLCertVerificationError as exc:
        return [error("certificate", f"not trusted for {target.host}: {exc.verify_message}",
                      "install a certificate for the host name from a public CA (certbot on the host)")]
    result = judge_certificate(target.host, not_after, datetime.now(timezone.utc))
    return [Result(result.check, result.status, result.detail, result.remedy,
                   {"sha256": hashlib.sha256(der).hexdigest()})]


def _old_tls_context() -> ssl.SSLContext:
    # Offer only TLS 1.0/1.1, at the lowest security level, so that a refusal is the server's.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # deprecated on purpose: the probe is that the server refuses them
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def _old_tls_probe(target: Target, port: int) -> tuple[bool | None, str]:
    """Offer only TLS 1.0/1.1 on ``port``: (True accepted, False refused, None could not probe) and what was seen."""
    try:
        raw = _connect(target, port)
    except OSError as exc:
        return None, f"{port}: no connection ({exc})"
    try:
        if port == 587:
            smtp = raw.makefile("rwb")
            smtp.readline()
            smtp.write(b"EHLO mailstack.invalid\r\n")
            smtp.flush()
            while (line := smtp.readline()) and line[3:4] == b"-":
                pass
            smtp.write(b"STARTTLS\r\n")
            smtp.flush()
            reply = smtp.readline()
            if not reply.startswith(b"220"):
                return None, f"{port}: STARTTLS not offered ({reply.decode(errors='replace').strip() or 'no reply'})"
        with _old_tls_context().wrap_socket(raw, server_hostname=target.host) as tls:
            return True, f"{port}: {tls.version()} accepted"
    except ssl.SSLError as exc:
        return False, f"{port}: refused ({exc.reason or exc})"
    except TimeoutError:
        return None, f"{port}: no answer within {TIMEOUT:.0f} s"
    except OSError as exc:
        # A server that drops the connection at the old ClientHello refuses it too; one that never spoke did not.
        return False, f"{port}: connection closed at the TLS 1.0/1.1 handshake ({exc})"
    finally:
        raw.close()


def tls_floor(target: Target) -> list[Result]:
    """TLS 1.0 and 1.1 are refused on every TLS port; a port that could not be probed is an error, never a pass."""
    probes = {port: _old_tls_probe(target, port) for port in (465, 587, 993, 995)}
    seen = "; ".join(detail for _, detail in probes.values())
    accepted = [port for port, (verdict, _) in probes.items() if verdict is True]
    unprobed = [port for port, (verdict, _) in probes.items() if verdict is None]
    if accepted:
        return [error("TLS 1.2 minimum", f"TLS 1.0/1.1 accepted on port {', '.join(map(str, accepted))}: {seen}",
                      "set smtpd_tls_protocols / smtpd_tls_mandatory_protocols = >=TLSv1.2 and ssl_min_protocol = TLSv1.2")]
    if unprobed:
        return [error("TLS 1.2 minimum", f"could not probe port {', '.join(map(str, unprobed))}: {seen}",
                      "the host did not answer there: check its address, the security group and that postfix and "
                      "dovecot run (see the port checks), then verify again")]
    return [ok("TLS 1.2 minimum", f"TLS 1.0 and 1.1 refused: {seen}")]


def auth_before_starttls(target: Target) -> list[Result]:
    """Submission on 587 does not offer or accept AUTH before STARTTLS."""
    with _SMTP(target, 587) as smtp:
        smtp.ehlo("mailstack.invalid")
        offered = smtp.has_extn("auth")
        code, _ = smtp.docmd("AUTH", "PLAIN AG1haWxzdGFjawBwcm9iZQ==")  # \0mailstack\0probe: not a real account
    if offered or 200 <= code < 400:
        return [error("AUTH only after STARTTLS", f"port 587 {'offers' if offered else 'accepts'} AUTH in plain text (reply {code})",
                      "set smtpd_tls_auth_only = yes (and smtpd_tls_security_level = encrypt on submission)")]
    return [ok("AUTH only after STARTTLS", f"AUTH refused before STARTTLS (reply {code})")]


def no_open_relay(target: Target) -> list[Result]:
    """Port 25 refuses mail from outside to outside (no DATA is ever sent)."""
    with _SMTP(target, 25) as smtp:
        smtp.ehlo("relay-probe.mailstack.invalid")
        smtp.mail("relay-probe@example.org")
        code, reply = smtp.rcpt("relay-probe@example.net")
        smtp.rset()
    if 200 <= code < 300:
        return [error("no open relay", f"port 25 accepted mail for example.net from anyone ({code})",
                      "keep reject_unauth_destination in smtpd_relay_restrictions")]
    return [ok("no open relay", f"relaying refused ({code} {reply.decode(errors='replace')[:60]})")]


def _probe(target: Target, via: str, token: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = target.user
    message["To"] = target.user
    message["Subject"] = f"mailstack verify: submission via {via}"
    message["X-Mailstack-Probe"] = token
    message.set_content(f"Sent by mailstack verify through {via}; deleted after it was read back.\n")
    return message


def delivery(target: Target, *, wait: float = 30.0) -> list[Result]:
    """Mail submitted with AUTH on 587 and on 465 reaches the mailbox, read back over IMAP 993 and POP3 995."""
    if not (target.user and target.password):
        return [error("delivery", "no test mailbox given", "give --user and --password-file of a test mailbox")]
    token = uuid.uuid4().hex
    results, sent = [], {}
    refused = None  # the port whose server refused the password: not offered again on the other port
    for port in (587, 465):
        if refused:
            results.append(error(f"submission {port}", f"not tried: the password was refused on {refused} (each "
                                 "refused login counts towards the host's limit of failed logins)",
                                 "check the test mailbox's password"))
            continue
        try:
            client = _SMTP(target, port) if port == 587 else _SMTPS(target, port)
            with client as smtp:
                if port == 587:
                    smtp.starttls(context=tls_context(target))
                login_once(smtp, target.user, target.password)
                smtp.send_message(_probe(target, str(port), f"{token}-{port}"))
            sent[port] = f"{token}-{port}"
        except (smtplib.SMTPException, OSError) as exc:
            refused = port if isinstance(exc, smtplib.SMTPAuthenticationError) else None
            results.append(error(f"submission {port}", f"sending with AUTH failed: {exc}",
                                 "check the test mailbox's password and the submission service"))
    if not sent:
        return results
    try:
        found = _read_back_imap(target, list(sent.values()), wait)
    except (imaplib.IMAP4.error, OSError) as exc:
        return results + [error("IMAP 993", f"reading the mailbox failed: {exc}",
                                "check the test mailbox's password and dovecot's imap service")]
    for port, probe in sent.items():
        if probe in found:
            results.append(ok(f"submission {port}", f"delivered and read over IMAP in {found[probe]:.1f} s"))
        else:
            results.append(error(f"submission {port}", f"accepted but not in the mailbox after {wait:.0f} s",
                                 "read the mail log on the host (LMTP delivery, quota)"))
    try:
        results.append(_read_back_pop(target, list(sent.values())))
    except (poplib.error_proto, OSError) as exc:
        results.append(error("POP3 995", f"reading the mailbox failed: {exc}", "check dovecot's pop3 service"))
    _delete_probes(target, token)
    return results


def _read_back_imap(target: Target, probes: list[str], wait: float) -> dict[str, float]:
    started, found = time.monotonic(), {}
    with _IMAPS(target) as imap:
        imap.login(target.user, target.password)
        while len(found) < len(probes) and time.monotonic() - started < wait:
            imap.select("INBOX", readonly=True)
            for probe in probes:
                if probe not in found:
                    _, data = imap.search(None, "HEADER", "X-Mailstack-Probe", probe)
                    if data and data[0].split():
                        found[probe] = time.monotonic() - started
            if len(found) < len(probes):
                time.sleep(0.2)
    return found


def _read_back_pop(target: Target, probes: list[str]) -> Result:
    pop = _POP3S(target)
    try:
        pop.user(target.user)
        pop.pass_(target.password)
        count = len(pop.list()[1])
        headers = b"\n".join(_pop_headers(pop, n) for n in range(1, count + 1))
    finally:
        pop.quit()
    missing = [p for p in probes if p.encode() not in headers]
    if missing:
        return error("POP3 995", f"{len(missing)} of {len(probes)} probe messages not listed over POP3", "check dovecot's pop3 service")
    return ok("POP3 995", f"{len(probes)} probe messages read over POP3")


def _pop_headers(pop: poplib.POP3, number: int) -> bytes:
    """The header of message ``number``; empty when another session expunged it since the listing (another
    check's message: this check's probes are deleted only after it), so one such message fails nothing."""
    try:
        return b"\n".join(pop.top(number, 0)[1])
    except poplib.error_proto as exc:
        if "expunged" in str(exc):  # Dovecot: -ERR Message N expunged.
            return b""
        raise


def _delete_probes(target: Target, token: str) -> None:
    with _IMAPS(target) as imap:
        imap.login(target.user, target.password)
        imap.select("INBOX")
        for port in (587, 465):
            _, data = imap.search(None, "HEADER", "X-Mailstack-Probe", f"{token}-{port}")
            for number in (data[0].split() if data and data[0] else []):
                imap.store(number, "+FLAGS", "\\Deleted")
        imap.expunge()


SERVICE_CHECKS = (ports, certificate, tls_floor, auth_before_starttls, no_open_relay, delivery)
