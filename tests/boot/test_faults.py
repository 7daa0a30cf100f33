"""A first boot that meets trouble converges once the causes are gone, with no step by hand.

One host boots while S3 is down, its mail volume is not attached yet, Let's
Encrypt keeps failing and something else holds port 443; the test only
removes those causes, in that order.
"""

from __future__ import annotations

import socket

import pytest

from tests.boot import probes
from tests.boot.host import booted
from tests.boot.netns import HOST_ADDRESS

pytestmark = pytest.mark.boot


def _occupy_https() -> socket.socket:
    sock = socket.socket()
    sock.bind((HOST_ADDRESS, 443))
    sock.listen()
    return sock


@pytest.fixture(scope="module")
def host():
    squatter = []

    def occupy_https(host):  # before the boot: another process holds 443 on the host's address
        squatter.append(host.network.call(_occupy_https, namespace=host.network.host))

    with booted("faults", aws_down=True, acme_failures=1000, volume_attached=False,
                before_boot=occupy_https) as host:
        host.squatter = squatter[0]
        try:
            yield host
        finally:
            host.squatter.close()


def test_the_host_keeps_asking_for_its_bundle_while_s3_is_down(host):
    host.machine.wait_for(lambda: host.agent_log().count("not available") >= 2, "two failed bundle fetches", 120)
    assert host.applied() is None
    host.fakes.faults.aws_down = False


def test_nothing_is_written_for_mail_until_the_volume_is_attached(host):
    host.machine.wait_for(lambda: "not attached yet; retrying next run" in host.agent_log(),
                          "the agent waiting for the mail volume", 60)
    assert host.applied() is None
    assert not host.file("/etc/dovecot/users").exists()
    host.attach_volume()
    host.machine.wait_for(lambda: "mounted on /var/mail/vmail" in host.agent_log(), "the volume mounted", 60)


def test_mail_ports_work_with_a_logged_self_signed_stand_in_while_acme_fails(host):
    host.machine.wait_for(lambda: "certbot failed (attempt 2;" in host.agent_log(), "two failed ACME attempts", 120)
    assert "SELF-SIGNED stand-in certificate installed" in host.agent_log()
    stand_in = host.file(f"/etc/letsencrypt/live/{host.stack.host}/fullchain.pem").read_text()
    for port in probes.MAIL_PORTS:
        cert = host.outside(probes.certificate, port, stand_in, host.stack.host)
        assert cert["issuer"] == cert["subject"], port


def test_a_unit_that_fails_to_start_is_retried_with_its_reason_in_the_journal(host):
    host.machine.wait_for(lambda: "nginx is not active; retrying next run" in host.agent_log(),
                          "nginx failing to start", 60)
    assert "Address already in use" in host.agent_log()
    assert host.applied() is None, "a bundle is applied only when every unit it configures is active"


def test_the_host_converges_once_the_causes_are_gone(host):
    host.squatter.close()
    host.fakes.faults.acme_failures = 0
    host.wait_converged(host.stack.version, timeout=120)
    ca = host.pebble_root()
    for port in probes.MAIL_PORTS:
        assert "Pebble" in str(host.outside(probes.certificate, port, ca, host.stack.host)["issuer"]), port
    log = host.agent_log()
    assert log.count(f"bundle {host.stack.version} applied") == 1
    assert log.count("issued by Let's Encrypt") == 1
    assert host.machine.run("systemctl", "is-active", "nginx", check=False).stdout.strip() == "active"
