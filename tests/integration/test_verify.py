"""`mailstack verify` against the real host (Postfix, Dovecot, OpenDKIM), real DNS (Knot) and an SMTP sink standing in
for its relay, failures injected for real."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.checks import Status, Target, run_checks
from mailstack.checks.dns import dns_checks
from mailstack.checks.outbound import CHECK as OUTBOUND_CHECK, outbound_check
from mailstack.checks.service import SERVICE_CHECKS, judge_certificate, tls_floor
from mailstack.local import host as local
from mailstack.local.dnsserver import AuthoritativeDns
from mailstack.local.loopback import LoopbackAddress
from mailstack.local.sink import sink_on_loopback
from mailstack.stack.passwords import initial_password
from mailstack.host.records import Dkim, desired_records, dkim_value
from mailstack.stack.roster import load_roster
from mailstack.stack.settings import settings_from_values
from mailstack.local.zonefile import reverse_record, reverse_zone
from tests.conftest import PROJECT, RELAY, require_root_and_packages, require_tool, stack_values, write_roster

pytestmark = pytest.mark.integration

ADDRESS, DNS_ADDRESS, PERMISSIVE_ADDRESS = "127.0.3.21", "127.0.5.21", "127.0.3.22"
RELAY_ADDRESS = "127.0.40.3"  # an SMTP sink standing in for the dev stack's relay
SEED = "verify-seed-" + "x" * 36
USER = "user1@example.com"
# The module's one wrong password: Dovecot lengthens its delay after a failed login for each new wrong password
# from a client address (here always 127.0.0.1), not for one tried again.
WRONG = "not-the-password"


@pytest.fixture(scope="module")
def settings():
    return settings_from_values(stack_values("r.csv"), source="t")


@pytest.fixture(scope="module")
def dkim_key():
    require_tool("openssl")
    return local.new_dkim_key()


@pytest.fixture(scope="module")
def relay():
    with sink_on_loopback(RELAY_ADDRESS) as sink:
        yield sink


@pytest.fixture(scope="module")
def mail_host(tmp_path_factory, settings, dkim_key, relay):
    require_root_and_packages()
    roster = load_roster(write_roster(tmp_path_factory.mktemp("r") / "r.csv", 3, generate_every=1), domains=settings.domains)
    with local.running(settings, roster, address=ADDRESS, password_seed=SEED, dkim_private_key=dkim_key,
                       relayhost=f"[{RELAY_ADDRESS}]:25") as host:
        yield host


@pytest.fixture(scope="module")
def dns_server(settings, dkim_key):
    require_tool("knotd")
    public = local.public_key_pem(dkim_key)
    with AuthoritativeDns(DNS_ADDRESS, [settings.zone, reverse_zone(ADDRESS)]) as server:
        server.serve(desired_records(settings, ip=ADDRESS, dkim=Dkim("mail", dkim_value(public)))
                     + [reverse_record(ADDRESS, settings.host.name)])
        server.public_key = dkim_value(public).split("p=")[1]
        yield server


@pytest.fixture
def target(mail_host, dns_server):
    return Target(host="mail.example.com", domain="example.com", address=ADDRESS, user=USER,
                  password=initial_password(SEED, USER), cafile=str(mail_host.ca_cert), dns_server=dns_server.server,
                  dkim_selector="mail", dkim_public_key=dns_server.public_key, mta_sts=True)


def statuses(results) -> dict[str, Status]:
    return {r.check: r.status for r in results}


def postconf(host, *settings: str) -> None:
    subprocess.run(["postconf", "-c", str(host.postfix_dir), *settings], check=True)
    host.reload_postfix()


# ------------------------------------------------------------------ healthy host


def test_a_healthy_host_passes_every_check(target):
    results = run_checks([*SERVICE_CHECKS, dns_checks], target)
    failed = [r for r in results if r.status is not Status.OK]
    assert failed == []
    assert set(statuses(results)) >= {"port 25", "port 465", "port 587", "port 993", "port 995", "certificate",
                                      "TLS 1.2 minimum", "AUTH only after STARTTLS", "no open relay", "submission 587",
                                      "submission 465", "POP3 995", "host address", "reverse DNS", "SPF", "DKIM",
                                      "DMARC", "MTA-STS", "TLS-RPT"}


def test_verify_record_writes_evidence_of_this_host_on_success(target, mail_host, tmp_path, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(PROJECT / "stacks", project / "stacks", ignore=shutil.ignore_patterns("evidence"))
    shutil.copy(PROJECT / "Pulumi.yaml", project)
    (project / "stacks/Pulumi.t.yaml").write_text(
        (PROJECT / "stacks/Pulumi.dev.yaml").read_text().replace("mail-dev.example.com", "mail.example.com"))
    (tmp_path / "pw").write_text(target.password + "\n")
    monkeypatch.chdir(project)
    result = CliRunner().invoke(app, [
        "verify", "-s", "t", "--address", ADDRESS, "--user", USER, "--password-file", str(tmp_path / "pw"),
        "--cafile", target.cafile, "--dns-server", target.dns_server, "--dkim-selector", "mail", "--record"])
    assert result.exit_code == 0, result.output
    evidence = json.loads((project / "stacks/evidence/t.json").read_text())["verification"]
    der = ssl.PEM_cert_to_DER_cert(mail_host.ca_cert.read_text())
    assert evidence["host_name"] == "mail.example.com" and evidence["host_ip"] == ADDRESS
    assert evidence["certificate_sha256"] == hashlib.sha256(der).hexdigest()
    assert datetime.fromisoformat(evidence["at"]) > datetime.now(timezone.utc) - timedelta(minutes=2)
    # The dev stack's relay (the sink stands in for it) took the outbound probe: the proof the cutover gate asks for.
    assert evidence["outbound"] == {"route": "relay", "summary": "relay relay.example.net:587",
                                    "probe": "outbound-probe@example.net", "action": "relayed",
                                    "remote_mta": RELAY_ADDRESS}

    (tmp_path / "pw").write_text(WRONG + "\n")
    (project / "stacks/evidence/t.json").unlink()
    failed = CliRunner().invoke(app, [
        "verify", "-s", "t", "--address", ADDRESS, "--user", USER, "--password-file", str(tmp_path / "pw"),
        "--cafile", target.cafile, "--dns-server", target.dns_server, "--record"])
    assert failed.exit_code == 3 and "no evidence written" in failed.output
    assert not (project / "stacks/evidence/t.json").exists()


# ------------------------------------------------------------- outbound mail
# The probe's fate is read from the delivery report the host's own Postfix returns: relayed (the relay took it),
# failed (the relay refused it), or none at all (the relay is down: the probe waits in the queue).

PROBE = "probe@partner.example"


@pytest.fixture(scope="module")
def route():
    """The way out a stack declaring a relay has (the host's Postfix relays to the sink standing in for it)."""
    return settings_from_values(stack_values("r.csv", relay=RELAY, outbound_probe=PROBE), source="t").outbound


def test_a_probe_the_relay_takes_passes_with_the_relay_named(route, relay, target):
    (result,) = outbound_check(route, PROBE, wait=20)(target)
    assert result.check == OUTBOUND_CHECK and result.status is Status.OK, result
    assert "relayed to" in result.detail and RELAY_ADDRESS in result.detail
    assert result.facts["outbound"]["route"] == "relay" and result.facts["outbound"]["probe"] == PROBE
    received = relay.wait_for(lambda m: PROBE in m.recipients, timeout=5)
    assert b"X-Mailstack-Probe:" in received.data


def test_a_probe_the_relay_refuses_fails_with_its_answer(route, relay, target):
    relay.refuse_with = "554 5.7.1 Message rejected: Email address is not verified"
    try:
        (result,) = outbound_check(route, PROBE, wait=20)(target)
    finally:
        relay.refuse_with = None
    assert result.status is Status.ERROR
    assert "did not leave: failed 5.7.1" in result.detail and "Email address is not verified" in result.detail
    assert "mailstack:relay" in result.remedy


def test_a_relay_that_is_down_is_an_error_never_a_pass(route, relay, target):
    relay.stop()
    try:
        (result,) = outbound_check(route, PROBE, wait=4)(target)
    finally:
        relay.start()
    assert result.status is Status.ERROR
    assert result.detail.startswith(f"no delivery report for the probe to {PROBE} within 4 s")
    assert "waiting in the host's queue" in result.remedy and "relay smtp.relay.example.net:587" in result.remedy


# ------------------------------------------------------------- injected failures


def test_a_self_signed_certificate_is_not_trusted(target):
    untrusted = Target(**{**vars(target), "cafile": None})
    (result,) = [r for r in SERVICE_CHECKS[1](untrusted)]
    assert result.status is Status.ERROR and result.detail.startswith("not trusted for mail.example.com")
    assert "certificate for the host name from a public CA" in result.remedy


def test_a_certificate_near_expiry_warns_then_fails():
    now = datetime(2026, 11, 23, tzinfo=timezone.utc)
    assert judge_certificate("h", now + timedelta(days=60), now).status is Status.OK
    assert judge_certificate("h", now + timedelta(days=10), now).status is Status.WARNING
    assert judge_certificate("h", now + timedelta(days=3), now).status is Status.ERROR
    assert judge_certificate("h", now - timedelta(days=1), now).status is Status.ERROR


def test_a_relay_permitting_config_is_caught(target, mail_host):
    # The classic open relay: "trusted" networks that are the whole internet.
    names = ("mynetworks", "smtpd_relay_restrictions", "smtpd_recipient_restrictions")
    original = subprocess.run(["postconf", "-c", str(mail_host.postfix_dir), "-h", *names],
                              check=True, capture_output=True, text=True).stdout.splitlines()
    postconf(mail_host, "-e", "mynetworks=0.0.0.0/0",
             "smtpd_relay_restrictions=permit_mynetworks,reject_unauth_destination",
             "smtpd_recipient_restrictions=permit_mynetworks,reject_unauth_destination")
    try:
        (result,) = SERVICE_CHECKS[4](target)
        assert result.status is Status.ERROR and "accepted mail for example.net from anyone" in result.detail
    finally:
        postconf(mail_host, "-e", *(f"{name}={value}" for name, value in zip(names, original)))
    (result,) = SERVICE_CHECKS[4](target)
    assert result.status is Status.OK


def test_auth_offered_before_starttls_is_caught(target, mail_host):
    master = mail_host.postfix_dir / "master.cf"
    original = master.read_text()
    # Loosened on both layers: Postfix offers AUTH without TLS, and accepts plaintext mechanisms there.
    master.write_text(original.replace("smtpd_tls_auth_only=yes", "smtpd_tls_auth_only=no\n"
                                       "  -o smtpd_sasl_security_options=noanonymous")
                      .replace("smtpd_tls_security_level=encrypt", "smtpd_tls_security_level=may"))
    mail_host.reload_postfix()
    try:
        (result,) = SERVICE_CHECKS[3](target)
        assert result.status is Status.ERROR and "port 587 offers AUTH in plain text" in result.detail
    finally:
        master.write_text(original)
        mail_host.reload_postfix()


def test_a_wrong_password_fails_delivery_with_its_remedy_and_costs_one_failed_login(target, mail_host):
    def failed_logins() -> int:
        return (mail_host.log_dir / "postfix.log").read_text(errors="replace").count("authentication failed")

    before = failed_logins()
    results = SERVICE_CHECKS[5](Target(**{**vars(target), "password": WRONG}))
    assert statuses(results) == {"submission 587": Status.ERROR, "submission 465": Status.ERROR}
    assert all("password" in r.remedy for r in results)
    assert "not tried: the password was refused on 587" in {r.check: r for r in results}["submission 465"].detail
    deadline = time.monotonic() + 5  # Postfix writes its log through postlogd: wait for the line, then a little more
    while failed_logins() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert failed_logins() - before == 1  # one mechanism on one port, not PLAIN then LOGIN on 587 and on 465


def test_a_server_accepting_tls_1_1_is_caught(tmp_path):
    """A real TLS server that accepts TLS 1.1, on the IMAPS port of another address."""
    require_tool("openssl")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", tmp_path / "k.pem",
                    "-out", tmp_path / "c.pem", "-days", "2", "-subj", "/CN=old.example.com"], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    address = LoopbackAddress(PERMISSIVE_ADDRESS)
    address.add()
    listeners = []
    try:
        for port in (465, 993, 995):
            sock = socket.create_server((PERMISSIVE_ADDRESS, port))
            listeners.append(sock)
            threading.Thread(target=_serve_tls, args=(sock, context), daemon=True).start()
        (result,) = tls_floor(Target(host="old.example.com", domain="example.com", address=PERMISSIVE_ADDRESS))
        assert result.status is Status.ERROR and "TLS 1.0/1.1 accepted on port 465, 993, 995" in result.detail
    finally:
        for sock in listeners:
            sock.close()
        address.remove()


def _serve_tls(sock, context) -> None:
    try:
        while True:
            conn, _ = sock.accept()
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()
    except OSError:
        return


def test_a_stopped_daemon_fails_its_ports_with_a_remedy(target, mail_host):
    """Last: it stops Dovecot for the rest of the module."""
    subprocess.run(["doveadm", "-c", str(mail_host.dovecot_conf), "stop"], check=True)
    results = {r.check: r for r in SERVICE_CHECKS[0](target)}
    assert results["port 993"].status is Status.ERROR and results["port 995"].status is Status.ERROR
    assert "dovecot runs on the host" in results["port 993"].remedy
    assert results["port 25"].status is Status.OK
