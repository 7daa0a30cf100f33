"""The rendered host against an attacker, on real Postfix, Dovecot and OpenDKIM on loopback.

SMTP smuggling on 25, forged senders on 587/465, mail for a full mailbox
without SIZE (no backscatter), password guessing per account and per address,
recipient probing. One host for the module (127.0.11.1, standard ports); its
outgoing mail, bounces included, goes to an SMTP sink on 127.0.11.2:25.
Clients bind to other addresses of 127.0.11.0/24 to play distinct machines.
"""

from __future__ import annotations

import concurrent.futures
import imaplib
import smtplib
import socket
import ssl
import subprocess
import time
import uuid

import pytest

from mailstack.local import host as local
from mailstack.local.sink import sink_on_loopback
from mailstack.stack.passwords import initial_password
from mailstack.stack.roster import load_roster
from mailstack.stack.settings import settings_from_values
from tests.conftest import require_root_and_packages, stack_values

pytestmark = pytest.mark.integration

ADDRESS, SINK = "127.0.11.1", "127.0.11.2"
SEED = "hardening-tests-seed-" + "x" * 24
ALICE, SMALL, BOB, TARGET = "alice@example.com", "small@example.com", "bob@example.com", "target@example.com"
SPRAYED = [f"spray{n}@example.com" for n in range(4)]
ROSTER = "\n".join([
    "address,name,quota,protocol,aliases,password",
    f"{ALICE},Alice,100M,imap,info@example.com,generate",
    f"{SMALL},Small,1M,imap,full@example.com,generate",
    f"{BOB},Bob,unlimited,imap,,generate",
    f"{TARGET},Target,100M,imap,,generate",
    *(f"{box},Spray,100M,imap,,generate" for box in SPRAYED),
]) + "\n"
OUTSIDE = "someone@example.org"
ACCOUNT_FAILURES, ADDRESS_FAILURES = 10, 30  # templates/dovecot/auth-policy
RECIPIENTS_PER_MINUTE = 300  # smtpd_client_recipient_rate_limit in templates/postfix/main.cf.j2


@pytest.fixture(scope="module")
def sink():
    require_root_and_packages()
    with sink_on_loopback(SINK) as running:
        yield running


@pytest.fixture(scope="module")
def mail_host(tmp_path_factory, sink):
    roster_path = tmp_path_factory.mktemp("roster") / "roster.csv"
    roster_path.write_text(ROSTER)
    settings = settings_from_values(stack_values(roster_path), source="test")
    roster = load_roster(roster_path, domains=settings.domains)
    with local.running(settings, roster, address=ADDRESS, password_seed=SEED, relayhost=f"[{SINK}]:25") as running:
        yield running


@pytest.fixture(scope="module")
def tls(mail_host) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(mail_host.ca_cert))


def password(address: str) -> str:
    return initial_password(SEED, address, 1)


def subjects(tls, user: str) -> list[str]:
    with imaplib.IMAP4_SSL(ADDRESS, 993, ssl_context=tls, timeout=10) as imap:
        imap.login(user, password(user))
        _, (count,) = imap.select("INBOX", readonly=True)
        if int(count) == 0:
            return []
        _, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        return [part[1].decode().strip() for part in data if isinstance(part, tuple)]


def wait_for_subject(tls, user: str, subject: str, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"Subject: {subject}" in subjects(tls, user):
            return True
        time.sleep(0.2)
    return False


def log_lines(mail_host, name: str) -> list[str]:
    return (mail_host.log_dir / name).read_text(errors="replace").splitlines()


# ---------------------------------------------------------------- SMTP smuggling on 25


def smtp_dialogue(commands: bytes, data: bytes) -> list[bytes]:
    """Every reply line of a raw SMTP session on 25: ``commands`` up to DATA, then ``data`` as sent, then QUIT."""
    with socket.create_connection((ADDRESS, 25), timeout=15) as raw:
        stream = raw.makefile("rb")
        replies = [stream.readline()]
        for command in commands.split(b"\r\n")[:-1]:
            raw.sendall(command + b"\r\n")
            while True:
                line = stream.readline()
                replies.append(line)
                if line[3:4] != b"-":
                    break
        assert replies[-1].startswith(b"354"), replies
        raw.sendall(data + b"QUIT\r\n")
        while not replies[-1].startswith(b"221"):
            line = stream.readline()
            if not line:
                break
            replies.append(line)
    return replies


@pytest.mark.parametrize("ending", [b"\n.\n", b"\r\n.\n", b"\n.\r\n"], ids=["LF.LF", "CRLF.LF", "LF.CRLF"])
def test_a_bare_newline_dot_does_not_end_data_so_nothing_is_smuggled(mail_host, tls, ending):
    outer, smuggled = f"outer {uuid.uuid4().hex}", f"smuggled {uuid.uuid4().hex}"
    commands = f"EHLO client.example.org\r\nMAIL FROM:<{OUTSIDE}>\r\nRCPT TO:<{ALICE}>\r\nDATA\r\n".encode()
    data = (f"From: {OUTSIDE}\r\nTo: {ALICE}\r\nSubject: {outer}\r\n\r\nHello.".encode() + ending
            + f"MAIL FROM:<taro.yamada@example.com>\r\nRCPT TO:<{ALICE}>\r\nDATA\r\n"
              f"From: taro.yamada@example.com\r\nTo: {ALICE}\r\nSubject: {smuggled}\r\n\r\nPay this.\r\n.\r\n".encode())
    replies = smtp_dialogue(commands, data)
    queued = [line for line in replies if line.startswith(b"250 2.0.0 Ok: queued")]
    assert len(queued) == 1, replies
    assert wait_for_subject(tls, ALICE, outer)
    assert f"Subject: {smuggled}" not in subjects(tls, ALICE)


# ---------------------------------------------------------------- forged senders on 587/465


def submission(tls, port: int, login: str = ALICE) -> smtplib.SMTP:
    if port == 465:
        client = smtplib.SMTP_SSL(ADDRESS, 465, context=tls, timeout=15)
    else:
        client = smtplib.SMTP(ADDRESS, port, timeout=15)
        client.starttls(context=tls)
    client.login(login, password(login))
    return client


def message(from_header: str, subject: str, extra: str = "") -> bytes:
    return (f"From: {from_header}\r\n{extra}To: {OUTSIDE}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@example.com>\r\n\r\nHello.\r\n").encode()


@pytest.mark.parametrize("port", [587, 465])
def test_submission_refuses_the_null_sender(mail_host, tls, port):
    with submission(tls, port) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("", [OUTSIDE], message(ALICE, "null sender"))
    code, text = refused.value.recipients[OUTSIDE]
    assert code == 554 and b"needs a sender address" in text


@pytest.mark.parametrize("port", [587, 465])
@pytest.mark.parametrize("from_header,extra", [
    (BOB, ""),                                           # another mailbox
    ("Bob <bob@example.com>", ""),
    ("nobody@example.com", ""),                          # no mailbox at all, same domain
    (f"{ALICE}, {BOB}", ""),                             # one owned, one not
    (ALICE, f"From: {BOB}\r\n"),                         # a second From: header
    (f"{ALICE} <{BOB}>", ""),                            # what a reader sees vs the address
])
def test_submission_refuses_a_from_header_that_is_not_the_logins(mail_host, sink, tls, port, from_header, extra):
    subject = f"forged {uuid.uuid4().hex}"
    with submission(tls, port) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(ALICE, [OUTSIDE], message(from_header, subject, extra))
    assert refused.value.smtp_code == 550 and b"5.7.1" in refused.value.smtp_error
    # What was refused never leaves: a message sent afterwards arrives, the forged one does not.
    control = f"control {uuid.uuid4().hex}"
    with submission(tls, port) as client:
        client.sendmail(ALICE, [OUTSIDE], message(ALICE, control))
    sink.wait_for(lambda m: control.encode() in m.data)
    assert not [m for m in sink.messages if subject.encode() in m.data]


@pytest.mark.parametrize("from_header", [ALICE, f"Alice <{ALICE}>", "info@example.com", "ALICE@EXAMPLE.COM"])
def test_submission_accepts_and_signs_the_logins_own_addresses(mail_host, sink, tls, from_header):
    subject = f"own {uuid.uuid4().hex}"
    with submission(tls, 465) as client:
        client.sendmail(ALICE, [OUTSIDE], message(from_header, subject))
    got = sink.wait_for(lambda m: subject.encode() in m.data)
    assert b"DKIM-Signature:" in got.data and b"d=example.com" in got.data


# ---------------------------------------------------------------- a full mailbox, no backscatter


def big_message(recipients: list[str], subject: str, megabytes: float = 2) -> bytes:
    line = b"x" * 998 + b"\r\n"
    body = line * int(megabytes * 1024 * 1024 / len(line))
    return f"From: {OUTSIDE}\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n\r\n".encode() + body


def send_without_size(recipients: list[str], data: bytes, size: int | None = None) -> tuple[int, bytes]:
    """The reply to a message sent on 25 without SIZE= (or with a SIZE= that lies), recipients all accepted."""
    with smtplib.SMTP(ADDRESS, 25, timeout=30) as client:
        client.ehlo("client.example.org")
        assert client.mail(OUTSIDE, [f"SIZE={size}"] if size else [])[0] == 250
        for recipient in recipients:
            assert client.rcpt(recipient)[0] == 250
        return client.data(data)


def assert_nothing_bounced(mail_host, sink, subject: str) -> None:
    """No bounce was queued or sent: Postfix's queue is empty and nothing reached the (forged) sender."""
    time.sleep(2)
    queue = subprocess.run(["postqueue", "-c", str(mail_host.postfix_dir), "-p"], capture_output=True, text=True)
    assert "Mail queue is empty" in queue.stdout, queue.stdout
    assert not [m for m in sink.messages if OUTSIDE in m.recipients and subject.encode() in m.data]
    assert not [line for line in log_lines(mail_host, "postfix.log") if "sender non-delivery notification" in line]


@pytest.mark.parametrize("recipients,size", [
    ([SMALL], None),                        # no SIZE
    (["full@example.com"], None),           # an alias of the full mailbox
    ([ALICE, SMALL], None),                 # several recipients, one of them full
    ([SMALL], 1000),                        # a SIZE that lies
], ids=["no-size", "alias", "two-recipients", "lying-size"])
def test_a_message_over_quota_is_refused_at_the_end_of_data_and_nothing_bounces(mail_host, sink, recipients, size):
    subject = f"too big {uuid.uuid4().hex}"
    code, text = send_without_size(recipients, big_message(recipients, subject), size)
    assert code == 552 and b"over its quota" in text and SMALL.encode() in text
    assert_nothing_bounced(mail_host, sink, subject)


def test_a_message_that_fits_is_delivered_without_size(mail_host, tls):
    subject = f"fits {uuid.uuid4().hex}"
    code, _ = send_without_size([SMALL], big_message([SMALL], subject, megabytes=0.1))
    assert code == 250 and wait_for_subject(tls, SMALL, subject)


def test_an_alias_of_a_full_mailbox_is_refused_at_rcpt_when_size_is_announced(mail_host):
    with smtplib.SMTP(ADDRESS, 25, timeout=10) as client:
        client.ehlo("client.example.org")
        client.mail(OUTSIDE, ["SIZE=2000000"])
        code, text = client.rcpt("full@example.com")
    assert code == 552 and b"over its quota" in text


# ---------------------------------------------------------------- password guessing


def imap_login(user: str, secret: str, source: str) -> bool:
    """One IMAP LOGIN over TLS from ``source``: True when the server accepted it."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((ADDRESS, 993), timeout=60, source_address=(source, 0)) as raw:
        with context.wrap_socket(raw) as conn:
            stream = conn.makefile("rb")
            stream.readline()
            conn.sendall(f'a LOGIN "{user}" "{secret}"\r\n'.encode())
            while True:
                line = stream.readline()
                if not line or line.startswith(b"a "):
                    return line.startswith(b"a OK")


def policy_refusals(mail_host, login: str) -> int:
    return sum(f"refused {login} " in line for line in log_lines(mail_host, "mailstack-auth-policy.log"))


def guess(attempts: list[tuple[str, str]], workers: int) -> tuple[list[bool], float]:
    """Wrong passwords, (user, source address) each, ``workers`` at a time: the results and the seconds taken."""
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda a: imap_login(a[0], "wrong-" + uuid.uuid4().hex, a[1]), attempts))
    return results, time.monotonic() - started


def test_guessing_one_accounts_password_from_many_addresses_stops_after_its_limit(mail_host):
    trusted, fresh = "127.0.11.20", "127.0.11.21"
    assert imap_login(TARGET, password(TARGET), trusted)
    attempts = [(TARGET, f"127.0.11.{100 + n}") for n in range(60)]  # one guess per address: no per-address limit
    results, seconds = guess(attempts, workers=30)
    checked = len(attempts) - policy_refusals(mail_host, TARGET)
    print(f"\n{len(attempts)} guesses at {TARGET} from {len(attempts)} addresses, 30 in parallel, in {seconds:.1f} s: "
          f"{checked} passwords checked ({checked / seconds:.2f}/s), {len(attempts) - checked} refused unchecked")
    assert not any(results) and checked <= ACCOUNT_FAILURES
    # The right password from an address new to the account is refused too; from where its owner logged in, not.
    assert not imap_login(TARGET, password(TARGET), fresh)
    assert imap_login(TARGET, password(TARGET), trusted)


def test_guessing_from_one_address_stops_after_its_limit_whatever_the_accounts(mail_host):
    attacker, other = "127.0.11.70", "127.0.11.71"
    attempts = [(box, attacker) for box in SPRAYED for _ in range(9)]  # under each account's limit
    results, seconds = guess(attempts, workers=36)
    refused = sum(policy_refusals(mail_host, box) for box in SPRAYED)
    print(f"\n{len(attempts)} guesses from one address at {len(SPRAYED)} accounts in {seconds:.1f} s: "
          f"{len(attempts) - refused} passwords checked, {refused} refused unchecked")
    assert not any(results) and len(attempts) - refused <= ADDRESS_FAILURES
    assert not imap_login(BOB, password(BOB), attacker)
    assert imap_login(BOB, password(BOB), other)


def test_smtp_auth_goes_through_the_same_policy(mail_host, tls):
    # TARGET's limit is used up by the test above when the module runs whole; this test stands alone too.
    guess([(TARGET, f"127.0.11.{180 + n}") for n in range(ACCOUNT_FAILURES)], workers=ACCOUNT_FAILURES)
    with smtplib.SMTP_SSL(ADDRESS, 465, context=tls, timeout=30, source_address=("127.0.11.199", 0)) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(TARGET, password(TARGET))
    assert policy_refusals(mail_host, TARGET) >= 1


# ---------------------------------------------------------------- recipient probing


def test_recipient_probing_on_25_is_limited_per_client_address(mail_host):
    # A few unknown recipients per connection (Postfix's own error limits would end a longer session),
    # connection after connection from one address, until Postfix says the address sent too many.
    probes, refused = 0, None
    while refused is None and probes < 400:
        with smtplib.SMTP(ADDRESS, 25, timeout=30, source_address=("127.0.11.90", 0)) as client:
            client.ehlo("client.example.org")
            client.mail(OUTSIDE)
            for _ in range(8):
                code, text = client.rcpt(f"probe{probes}@example.com")
                if code == 450:
                    refused = text
                    break
                assert code == 550, text
                probes += 1
    assert refused is not None and b"too many recipients" in refused.lower() and probes == RECIPIENTS_PER_MINUTE
