"""verify's outbound check against the real host (Postfix, Dovecot) relaying to a real SMTP sink on loopback.

The probe's fate is read from the delivery report the host's own Postfix
returns: relayed (the sink took it), failed (the sink refused it), or none at
all (the relay is down: the probe waits in the queue).
"""

from __future__ import annotations

import pytest

from mailstack.checks import Status, Target
from mailstack.checks.outbound import CHECK, outbound_check
from mailstack.local import host as local
from mailstack.local.loopback import LoopbackAddress
from mailstack.local.sink import SmtpSink
from mailstack.stack.passwords import initial_password
from mailstack.stack.roster import load_roster
from mailstack.stack.settings import settings_from_values
from tests.conftest import require_root_and_packages, stack_values, write_roster

pytestmark = pytest.mark.integration

ADDRESS, SINK = "127.0.40.1", "127.0.40.2"
SEED = "outbound-seed-" + "x" * 34
USER = "user0@example.com"
PROBE = "probe@partner.example"
RELAY = {"host": "smtp.relay.example.net", "port": 25}


@pytest.fixture(scope="module")
def settings():
    return settings_from_values(stack_values("r.csv", relay=RELAY, outbound_probe=PROBE), source="t")


@pytest.fixture(scope="module")
def sink():
    address = LoopbackAddress(SINK)
    address.add()
    try:
        with SmtpSink(SINK, 25) as running:
            yield running
    finally:
        address.remove()


@pytest.fixture(scope="module")
def mail_host(tmp_path_factory, settings, sink):
    require_root_and_packages()
    roster = load_roster(write_roster(tmp_path_factory.mktemp("r") / "r.csv", 1, generate_every=1),
                         domains=settings.domains)
    with local.running(settings, roster, address=ADDRESS, password_seed=SEED, relayhost=f"[{SINK}]:25") as host:
        yield host


@pytest.fixture
def target(mail_host):
    return Target(host="mail.example.com", domain="example.com", address=ADDRESS, user=USER,
                  password=initial_password(SEED, USER), cafile=str(mail_host.ca_cert))


def test_a_probe_the_relay_takes_passes_with_the_relay_named(settings, sink, target):
    (result,) = outbound_check(settings.outbound, PROBE, wait=20)(target)
    assert result.check == CHECK and result.status is Status.OK, result
    assert "relayed to" in result.detail and SINK in result.detail
    assert result.facts["outbound"]["route"] == "relay" and result.facts["outbound"]["probe"] == PROBE
    received = sink.wait_for(lambda m: PROBE in m.recipients, timeout=5)
    assert b"X-Mailstack-Probe:" in received.data


def test_a_probe_the_relay_refuses_fails_with_its_answer(settings, sink, target):
    sink.refuse_with = "554 5.7.1 Message rejected: Email address is not verified"
    try:
        (result,) = outbound_check(settings.outbound, PROBE, wait=20)(target)
    finally:
        sink.refuse_with = None
    assert result.status is Status.ERROR
    assert "did not leave: failed 5.7.1" in result.detail and "Email address is not verified" in result.detail
    assert "mailstack:relay" in result.remedy


def test_a_relay_that_is_down_is_an_error_never_a_pass(settings, sink, target):
    sink.stop()
    try:
        (result,) = outbound_check(settings.outbound, PROBE, wait=4)(target)
    finally:
        sink.start()
    assert result.status is Status.ERROR
    assert result.detail.startswith(f"no delivery report for the probe to {PROBE} within 4 s")
    assert "waiting in the host's queue" in result.remedy and "relay smtp.relay.example.net:25" in result.remedy
