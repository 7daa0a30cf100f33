"""The rendered host configuration, run on real Postfix, Dovecot and OpenDKIM on loopback.

One host for the module (127.0.3.1, standard ports); its outgoing mail goes to
an SMTP sink on 127.0.3.2:25. Clients are Python's smtplib, imaplib and
poplib, trusting the host's self-signed certificate: what a mail client sees.
"""

from __future__ import annotations

import email.message
import imaplib
import poplib
import secrets
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
import warnings

import pytest

from mailstack.host import files as hostfiles, records
from mailstack.local import host as local
from mailstack.local.sink import sink_on_loopback
from mailstack.stack.passwords import initial_password
from mailstack.stack.roster import load_roster
from mailstack.stack.settings import settings_from_values
from tests.conftest import require_root_and_packages, stack_values

pytestmark = pytest.mark.integration

ADDRESS = "127.0.3.1"
SINK = "127.0.3.2"
ALICE, SMALL, BOB = "alice@example.com", "small@example.com", "bob@example.com"
ROSTER = f"""address,name,quota,protocol,aliases,password
{ALICE},Alice,100M,imap,info@example.com sales@example.com,generate
{SMALL},Small,1M,imap,,generate
{BOB},Bob,unlimited,pop,,generate
"""
OUTSIDE = "someone@example.org"


@pytest.fixture(scope="module")
def seed() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def dkim_key() -> str:
    return local.new_dkim_key()


@pytest.fixture(scope="module")
def sink():
    require_root_and_packages()
    with sink_on_loopback(SINK) as running:
        yield running


@pytest.fixture(scope="module")
def mail_host(tmp_path_factory, sink, seed, dkim_key):
    roster_path = tmp_path_factory.mktemp("roster") / "roster.csv"
    roster_path.write_text(ROSTER)
    settings = settings_from_values(stack_values(roster_path), source="test")
    roster = load_roster(roster_path, domains=settings.domains)
    with local.running(settings, roster, address=ADDRESS, password_seed=seed, dkim_private_key=dkim_key,
                       relayhost=f"[{SINK}]:25") as running:
        yield running


@pytest.fixture(scope="module")
def tls(mail_host) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(mail_host.ca_cert))


def password(seed: str, address: str) -> str:
    return initial_password(seed, address, 1)


def message(sender: str, recipient: str, *, size: int = 0) -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"], msg["To"] = sender, recipient
    msg["Subject"] = f"test {uuid.uuid4().hex}"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@example.com>"
    msg.set_content("Hello from the mailstack tests.\n" + "x" * size)
    return msg


def submit(tls, seed, sender=ALICE, recipient=OUTSIDE, *, port=587, login=ALICE) -> email.message.EmailMessage:
    msg = message(sender, recipient)
    if port == 465:
        client = smtplib.SMTP_SSL(ADDRESS, 465, context=tls, timeout=10)
    else:
        client = smtplib.SMTP(ADDRESS, port, timeout=10)
        client.starttls(context=tls)
    with client:
        client.login(login, password(seed, login))
        client.send_message(msg)
    return msg


def deliver_on_25(recipient: str, *, size: int = 0) -> email.message.EmailMessage:
    msg = message(OUTSIDE, recipient, size=size)
    with smtplib.SMTP(ADDRESS, 25, timeout=10) as client:
        client.send_message(msg)
    return msg


def imap_subjects(tls, seed, user: str) -> list[str]:
    with imaplib.IMAP4_SSL(ADDRESS, 993, ssl_context=tls, timeout=10) as imap:
        imap.login(user, password(seed, user))
        _, (count,) = imap.select("INBOX", readonly=True)
        if int(count) == 0:
            return []
        _, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        return [part[1].decode().strip() for part in data if isinstance(part, tuple)]


def wait_for_subject(tls, seed, user: str, subject: str, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"Subject: {subject}" in imap_subjects(tls, seed, user):
            return True
        time.sleep(0.2)
    return False


def old_tls_client() -> ssl.SSLContext:
    """A client that would speak TLS 1.0/1.1: any refusal then comes from the server."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated is the point
        ctx.minimum_version, ctx.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
    return ctx


def handshake(ctx: ssl.SSLContext, port: int) -> None:
    """A TLS handshake on ``port``: implicit TLS, or STARTTLS on the SMTP ports."""
    with socket.create_connection((ADDRESS, port), timeout=10) as raw:
        if port in (25, 587):
            smtp = smtplib.SMTP()
            smtp.sock, smtp.file = raw, None
            smtp.getreply()
            smtp.ehlo("client.example.org")
            assert smtp.docmd("STARTTLS")[0] == 220
        with ctx.wrap_socket(raw, server_hostname=ADDRESS):
            pass


# ---------------------------------------------------------------- configuration checks


def test_postfix_check_finds_no_problem(mail_host):
    result = subprocess.run(["postfix", "-c", str(mail_host.postfix_dir), "check"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_doveconf_finds_no_problem(mail_host):
    result = subprocess.run(["doveconf", "-c", str(mail_host.dovecot_conf), "-n"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr


# ---------------------------------------------------------------- submission


def test_submission_on_587_sends_after_starttls_and_auth(mail_host, sink, tls, seed):
    msg = submit(tls, seed, port=587)
    got = sink.wait_for(lambda m: msg["Message-ID"].encode() in m.data)
    assert got.recipients == (OUTSIDE,) and got.mail_from == ALICE


def test_submissions_on_465_sends_with_implicit_tls_and_auth(mail_host, sink, tls, seed):
    msg = submit(tls, seed, port=465)
    got = sink.wait_for(lambda m: msg["Message-ID"].encode() in m.data)
    assert got.recipients == (OUTSIDE,)


def test_587_offers_no_auth_before_starttls(mail_host):
    with smtplib.SMTP(ADDRESS, 587, timeout=10) as client:
        client.ehlo("client.example.org")
        assert not client.has_extn("auth")
        code, _ = client.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHNlY3JldA==")
        assert 500 <= code < 600


def test_587_refuses_to_send_without_auth(mail_host, tls):
    with smtplib.SMTP(ADDRESS, 587, timeout=10) as client:
        client.starttls(context=tls)
        client.ehlo("client.example.org")
        assert client.has_extn("auth")
        client.mail(ALICE)
        code, _ = client.rcpt(OUTSIDE)
        assert 500 <= code < 600


def test_submission_refuses_another_mailboxs_sender_address(mail_host, tls, seed):
    with smtplib.SMTP_SSL(ADDRESS, 465, context=tls, timeout=10) as client:
        client.login(ALICE, password(seed, ALICE))
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.send_message(message(BOB, OUTSIDE))
    assert "not owned by user" in str(refused.value)


def test_submission_may_use_the_mailboxs_alias_as_sender(mail_host, sink, tls, seed):
    msg = submit(tls, seed, sender="info@example.com", port=465)
    assert sink.wait_for(lambda m: msg["Message-ID"].encode() in m.data).mail_from == "info@example.com"


# ---------------------------------------------------------------- port 25


def test_port_25_offers_no_auth_even_after_starttls(mail_host, tls):
    with smtplib.SMTP(ADDRESS, 25, timeout=10) as client:
        client.ehlo("client.example.org")
        assert not client.has_extn("auth")
        client.starttls(context=tls)
        client.ehlo("client.example.org")
        assert not client.has_extn("auth")


def test_port_25_refuses_to_relay_for_strangers(mail_host):
    with smtplib.SMTP(ADDRESS, 25, timeout=10) as client:
        client.ehlo("client.example.org")
        client.mail(OUTSIDE)
        code, text = client.rcpt("victim@example.net")
    assert code == 554 and b"Relay access denied" in text


def test_port_25_refuses_an_unknown_mailbox(mail_host):
    with smtplib.SMTP(ADDRESS, 25, timeout=10) as client:
        client.ehlo("client.example.org")
        client.mail(OUTSIDE)
        code, _ = client.rcpt("nobody@example.com")
    assert code == 550


def test_inbound_mail_on_25_is_read_over_imaps(mail_host, tls, seed):
    msg = deliver_on_25(ALICE)
    assert wait_for_subject(tls, seed, ALICE, msg["Subject"])


def test_inbound_mail_on_25_is_read_over_pop3s(mail_host, tls, seed):
    msg = deliver_on_25(BOB)
    assert wait_for_subject(tls, seed, BOB, msg["Subject"])
    pop = poplib.POP3_SSL(ADDRESS, 995, context=tls, timeout=10)
    try:
        pop.user(BOB)
        pop.pass_(password(seed, BOB))
        count, _ = pop.stat()
        texts = [b"\n".join(pop.retr(n + 1)[1]) for n in range(count)]
    finally:
        pop.quit()
    assert any(f"Subject: {msg['Subject']}".encode() in text for text in texts)


def test_mail_to_an_alias_reaches_its_mailbox(mail_host, tls, seed):
    msg = deliver_on_25("sales@example.com")
    assert wait_for_subject(tls, seed, ALICE, msg["Subject"])


def test_message_over_quota_is_refused_at_rcpt_with_552(mail_host):
    # 1M quota; Postfix's policy request carries the size the client announces (SIZE=).
    msg = message(OUTSIDE, SMALL, size=2 * 1024 * 1024)
    with smtplib.SMTP(ADDRESS, 25, timeout=10) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.send_message(msg)
    code, text = refused.value.recipients[SMALL]
    assert code == 552 and b"over its quota" in text


# ---------------------------------------------------------------- TLS


@pytest.mark.parametrize("port", [143, 110])
def test_no_plaintext_imap_or_pop3_listener(mail_host, port):
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((ADDRESS, port), timeout=5)


@pytest.mark.parametrize("port", [25, 587, 465, 993, 995])
def test_tls_1_0_and_1_1_are_refused(mail_host, port):
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        handshake(old_tls_client(), port)


@pytest.mark.parametrize("port", [25, 587, 465, 993, 995])
def test_cipher_without_forward_secrecy_is_refused(mail_host, port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("AES128-SHA:AES256-GCM-SHA384")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        handshake(ctx, port)


@pytest.mark.parametrize("port", [25, 587, 465, 993, 995])
def test_tls_1_2_with_a_modern_cipher_is_accepted(mail_host, port, tls):
    ctx = ssl.create_default_context(cafile=str(mail_host.ca_cert))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    handshake(ctx, port)


# ---------------------------------------------------------------- DKIM


def dkim_verdict(tmp_path, key_pem: str, data: bytes) -> str:
    """opendkim's verification of ``data``, with the public key from a file instead of DNS."""
    (tmp_path / "dns").write_text(f"{hostfiles.DKIM_SELECTOR}._domainkey.example.com {records.dkim_value(local.public_key_pem(key_pem))}\n")
    (tmp_path / "verify.conf").write_text(f"Mode v\nSyslog no\nTestDNSData file:{tmp_path / 'dns'}\n")
    (tmp_path / "message.eml").write_bytes(data)
    result = subprocess.run(["opendkim", "-x", str(tmp_path / "verify.conf"), "-t", str(tmp_path / "message.eml"), "-vv"],
                            capture_output=True, text=True, timeout=30)
    return result.stdout + result.stderr


def test_outgoing_mail_carries_a_valid_dkim_signature(mail_host, sink, tls, seed, dkim_key, tmp_path):
    msg = submit(tls, seed, port=587)
    data = sink.wait_for(lambda m: msg["Message-ID"].encode() in m.data).data
    assert data.startswith(b"DKIM-Signature:") or b"\nDKIM-Signature:" in data
    verdict = dkim_verdict(tmp_path, dkim_key, data)
    assert "dkim=pass" in verdict and "d=example.com" in verdict, verdict


def test_dkim_check_fails_for_a_message_changed_after_signing(mail_host, sink, tls, seed, dkim_key, tmp_path):
    msg = submit(tls, seed, port=465)
    data = sink.wait_for(lambda m: msg["Message-ID"].encode() in m.data).data
    verdict = dkim_verdict(tmp_path, dkim_key, data.replace(b"Hello from", b"Hello frum"))
    assert "dkim=fail" in verdict, verdict


# Last: Dovecot slows down further logins from an address after a failed one.
def test_submission_refuses_a_wrong_password(mail_host, tls):
    with smtplib.SMTP_SSL(ADDRESS, 465, context=tls, timeout=10) as client:
        client.ehlo("client.example.org")
        client.user, client.password = ALICE, "not-the-password"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth("PLAIN", client.auth_plain)
