"""The host agent's decisions (templates/host/mailstack-agent), without a host."""

from __future__ import annotations

import importlib.machinery
import importlib.util

import pytest

from mailstack.host import files as hostfiles

NAMES = ["mail.example.com", "mta-sts.example.com"]


@pytest.fixture(scope="module")
def agent():
    path = hostfiles.TEMPLATES / "host" / "mailstack-agent"
    loader = importlib.machinery.SourceFileLoader("mailstack_agent", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("mailstack_agent", loader))
    loader.exec_module(module)
    return module


ALL = ["opendkim", "dovecot", "postfix@-", "nginx"]


def test_units_come_up_in_dependency_order_whatever_changed(agent):
    changed = ["/etc/nginx/conf.d/mailstack.conf", "/etc/postfix/main.cf", "/etc/dovecot/dovecot.conf",
               "/etc/opendkim.conf"]
    assert [unit for unit, _, _ in agent.unit_actions(ALL, changed, [], False)] == ALL


def test_a_unit_that_is_not_active_is_restarted_even_when_nothing_changed(agent):
    assert agent.unit_actions(ALL, [], ["postfix@-"], False) == [("postfix@-", "restart", "not active")]


def test_a_config_change_restarts_because_a_failed_reload_keeps_the_old_config(agent):
    actions = agent.unit_actions(ALL, ["/etc/dovecot/dovecot.conf", "/etc/nginx/conf.d/mailstack.conf"], [], False)
    assert actions == [("dovecot", "restart", "/etc/dovecot/dovecot.conf changed"),
                       ("nginx", "restart", "/etc/nginx/conf.d/mailstack.conf changed")]


def test_a_roster_change_only_reloads(agent):
    changed = ["/etc/dovecot/users", "/etc/postfix/virtual_mailboxes", "/etc/postfix/sender_logins"]
    assert agent.unit_actions(ALL, changed, [], False) == [
        ("dovecot", "reload", "/etc/dovecot/users changed"),
        ("postfix@-", "reload", "/etc/postfix/virtual_mailboxes changed")]


def test_a_new_certificate_reloads_every_service_presenting_it(agent):
    assert [(u, a) for u, a, _ in agent.unit_actions(ALL, [], [], True)] == [
        ("dovecot", "reload"), ("postfix@-", "reload"), ("nginx", "reload")]


def test_units_the_bundle_does_not_configure_are_left_alone(agent):
    assert agent.managed_units(["/etc/postfix/main.cf", "/etc/dovecot/users"]) == ["dovecot", "postfix@-"]
    assert agent.unit_actions(["dovecot", "postfix@-"], ["/etc/nginx/conf.d/x.conf"], ["nginx"], True) == [
        ("dovecot", "reload", "new certificate"), ("postfix@-", "reload", "new certificate")]


def test_certificate_is_requested_when_missing(agent):
    assert agent.certificate_due({}, NAMES, False, 1000.0) == "no Let's Encrypt certificate yet"


def test_certificate_is_not_requested_again_for_the_same_names(agent):
    assert agent.certificate_due({"names": NAMES}, NAMES, True, 1000.0) is None


def test_certificate_is_expanded_when_the_names_change(agent):
    reason = agent.certificate_due({"names": NAMES[:1]}, NAMES, True, 1000.0)
    assert reason == "names changed from mail.example.com to mail.example.com, mta-sts.example.com"


def test_failed_certificate_attempts_back_off_until_their_time(agent):
    state = {"wanted": NAMES, "failures": 2, "retry_at": 2000.0}
    assert agent.certificate_due(state, NAMES, False, 1999.0) is None
    assert agent.certificate_due(state, NAMES, False, 2000.0) is not None
    # New names are worth an attempt at once: the failure may have been about the old ones.
    assert agent.certificate_due(state, [*NAMES, "autoconfig.example.com"], False, 1000.0) is not None


def test_retry_delays_double_and_stay_within_lets_encrypts_limits(agent):
    delays = [agent.retry_delay(n) for n in range(1, 12)]
    assert delays[:4] == [300, 600, 1200, 2400]
    assert max(delays) == 6 * 3600
    # Let's Encrypt allows 5 failed validations per name per hour: never more than 4 attempts in any hour.
    attempts = [sum(delays[:n]) for n in range(len(delays) + 1)]
    assert all(len([t for t in attempts if start <= t < start + 3600]) <= 4 for start in attempts)


def test_mail_volume_is_found_under_its_nitro_or_xen_name(agent):
    assert agent.volume_devices("vol-0123456789abcdef0") == [
        "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0", "/dev/xvdf"]


def test_filesystem_grows_only_when_the_volume_has_room_for_another_block(agent):
    assert agent.needs_grow(20 * 2**30, 20 * 2**30 // 4096, 4096) is False
    assert agent.needs_grow(20 * 2**30 + 4095, 20 * 2**30 // 4096, 4096) is False
    assert agent.needs_grow(30 * 2**30, 20 * 2**30 // 4096, 4096) is True


def test_relay_credentials_line_matches_main_cf_relayhost(agent):
    relay = {"host": "smtp.relay.example.net", "port": 587, "username": "mailer"}
    assert agent.relay_credentials(relay, "s3cret") == "[smtp.relay.example.net]:587 mailer:s3cret\n"


def test_a_failed_units_reason_is_its_own_message_not_systemds(agent):
    journal = ("Starting nginx.service - A high performance web server...\n"
               "nginx: [emerg] bind() to 0.0.0.0:443 failed (98: Address already in use)\n"
               "nginx.service: Control process exited, code=exited, status=1/FAILURE\n"
               "Failed to start nginx.service - A high performance web server.\n")
    assert agent.failure_reason(journal) == "nginx: [emerg] bind() to 0.0.0.0:443 failed (98: Address already in use)"
    assert agent.failure_reason("") == "no message in its journal"


def test_mount_unit_names_the_device_so_boot_waits_for_the_volume(agent):
    unit = agent.mount_unit("/dev/xvdf", "/var/mail/vmail")
    assert "What=/dev/xvdf\n" in unit and "Where=/var/mail/vmail\n" in unit and "Type=ext4\n" in unit
