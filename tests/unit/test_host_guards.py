"""The host's own small daemons, their decisions checked as data: the From check milter, the quota policy, the
authentication policy. test_host_hardening.py runs them on the real host."""

from __future__ import annotations

import importlib.machinery
import importlib.util

import pytest

from mailstack.host import files as hostfiles


def script(relative: str):
    """A script of templates/ loaded as a module (its daemon part needs Debian's packages, its decisions do not)."""
    path = hostfiles.TEMPLATES / relative
    loader = importlib.machinery.SourceFileLoader(path.name.replace("-", "_"), str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


milter = script("postfix/from-milter")
quota = script("postfix/quota-policy")
auth = script("dovecot/auth-policy")

OWNERS = milter.read_owners("alice@example.com alice@example.com\nInfo@Example.com alice@example.com\n"
                            "bob@example.com bob@example.com\nteam@example.com alice@example.com, bob@example.com\n")


# ---------------------------------------------------------------- From check


@pytest.mark.parametrize("value", ["alice@example.com", "Alice <alice@example.com>", "ALICE@example.COM",
                                   "info@example.com", '"bob@example.com" <alice@example.com>',
                                   "team@example.com"])
def test_from_of_the_logins_own_addresses_passes(value):
    assert milter.refusal("alice@example.com", [value], OWNERS) is None


@pytest.mark.parametrize("value", ["bob@example.com", "Alice <bob@example.com>", "alice@example.com, bob@example.com",
                                   "nobody@example.com", '"alice@example.com"@example.net', "alice@example.org"])
def test_from_of_another_address_is_refused_naming_it(value):
    reason = milter.refusal("alice@example.com", [value], OWNERS)
    assert reason and "may not send as" in reason


@pytest.mark.parametrize("value", ["", "undisclosed", "<bob@example.com>alice@example.com",
                                   "alice@example.com <bob@example.com>", "Alice <alice@example.com> bob@example.com",
                                   "<@relay.example:bob@example.com>", "<alice@example.com"])
def test_from_that_does_not_parse_cleanly_is_refused(value):
    assert "does not parse" in milter.refusal("alice@example.com", [value], OWNERS)


@pytest.mark.parametrize("values", [[], ["alice@example.com", "bob@example.com"], ["alice@example.com"] * 2])
def test_exactly_one_from_header_is_required(values):
    assert "exactly one From" in milter.refusal("alice@example.com", values, OWNERS)


def test_mail_without_a_login_is_refused():
    assert milter.refusal(None, ["alice@example.com"], OWNERS) == "submitted mail needs a login"


def test_folded_from_header_is_read_whole():
    assert milter.refusal("alice@example.com", ["Alice\r\n <alice@example.com>"], OWNERS) is None


# ---------------------------------------------------------------- quota policy


class QuotaStatus:
    """Dovecot's quota-status as a table: mailbox -> largest size that fits."""

    def __init__(self, room: dict[str, int]):
        self.room, self.asked = room, []

    def __call__(self, mailbox: str, size: str) -> str:
        self.asked.append((mailbox, size))
        if mailbox in self.room and int(size) > self.room[mailbox]:
            return f"552 5.2.2 Mailbox is full: {mailbox} is over its quota"
        return "DUNNO"


ALIASES = quota.read_aliases("full@example.com small@example.com\nteam@example.com alice@example.com, small@example.com\n")


def rcpt(recipient, size="0", instance="m1"):
    return {"protocol_state": "RCPT", "recipient": recipient, "size": size, "instance": instance}


def end_of_message(size, instance="m1", recipient=""):
    return {"protocol_state": "END-OF-MESSAGE", "recipient": recipient, "size": size, "instance": instance}


def test_end_of_data_checks_every_recipient_with_the_real_size():
    status, remembered = QuotaStatus({"small@example.com": 1000}), {}
    assert quota.verdict(rcpt("alice@example.com"), remembered, ALIASES, status) == "DUNNO"
    assert quota.verdict(rcpt("small@example.com"), remembered, ALIASES, status) == "DUNNO"
    action = quota.verdict(end_of_message("5000"), remembered, ALIASES, status)
    assert action.startswith("552") and "small@example.com" in action
    assert ("small@example.com", "5000") in status.asked and remembered == {}


def test_an_alias_is_charged_to_its_mailbox():
    status = QuotaStatus({"small@example.com": 1000})
    assert quota.verdict(rcpt("full@example.com", "5000"), {}, ALIASES, status).startswith("552")
    assert quota.verdict(rcpt("team@example.com", "5000"), {}, ALIASES, status).startswith("552")


def test_a_message_that_fits_passes_and_is_forgotten():
    status, remembered = QuotaStatus({"small@example.com": 1000}), {}
    quota.verdict(rcpt("small@example.com"), remembered, ALIASES, status)
    assert quota.verdict(end_of_message("900"), remembered, ALIASES, status) == "DUNNO" and remembered == {}


def test_end_of_data_without_remembered_recipients_uses_the_single_recipient():
    status = QuotaStatus({"small@example.com": 1000})
    assert quota.verdict(end_of_message("5000", recipient="small@example.com"), {}, ALIASES, status).startswith("552")


def test_messages_remembered_per_process_are_bounded():
    status, remembered = QuotaStatus({}), {}
    for n in range(quota.MAX_MESSAGES + 50):
        quota.verdict(rcpt("alice@example.com", instance=f"m{n}"), remembered, ALIASES, status)
    assert len(remembered) == quota.MAX_MESSAGES


# ---------------------------------------------------------------- authentication policy


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def fail(throttle, login, remote):
    status, _ = throttle.decide(login, remote)
    throttle.record(login, remote, False, status == auth.REJECT)
    return status


def succeed(throttle, login, remote):
    status, _ = throttle.decide(login, remote)
    throttle.record(login, remote, status == auth.ACCEPT, status == auth.REJECT)
    return status


def test_an_account_is_closed_to_new_addresses_after_its_failure_limit():
    throttle = auth.Throttle(clock=Clock())
    for n in range(auth.ACCOUNT_FAILURES):
        assert fail(throttle, "alice@example.com", f"192.0.2.{n}") == auth.ACCEPT
    status, reason = throttle.decide("Alice@Example.com", "198.51.100.7")
    assert status == auth.REJECT and "alice@example.com" in reason


def test_an_address_that_logged_in_before_still_gets_in_while_the_account_is_attacked():
    throttle = auth.Throttle(clock=Clock())
    assert succeed(throttle, "alice@example.com", "198.51.100.7") == auth.ACCEPT
    for n in range(auth.ACCOUNT_FAILURES * 3):
        fail(throttle, "alice@example.com", f"192.0.2.{n}")
    assert throttle.decide("alice@example.com", "198.51.100.7")[0] == auth.ACCEPT


def test_parallel_attempts_count_before_their_result_is_known():
    throttle = auth.Throttle(clock=Clock())
    allowed = [throttle.decide("alice@example.com", f"192.0.2.{n}")[0] for n in range(50)]
    assert allowed.count(auth.ACCEPT) == auth.ACCOUNT_FAILURES


def test_successful_logins_do_not_use_up_the_limit():
    throttle = auth.Throttle(clock=Clock())
    for _ in range(auth.ACCOUNT_FAILURES * 3):
        assert succeed(throttle, "alice@example.com", "2001:db8::1") == auth.ACCEPT
    assert throttle.decide("alice@example.com", "192.0.2.1")[0] == auth.ACCEPT


def test_an_address_is_closed_after_its_failure_limit_whatever_the_accounts():
    throttle = auth.Throttle(clock=Clock())
    for n in range(auth.ADDRESS_FAILURES):
        fail(throttle, f"user{n}@example.com", "192.0.2.9")
    assert throttle.decide("new@example.com", "192.0.2.9")[0] == auth.REJECT
    assert throttle.decide("new@example.com", "192.0.2.10")[0] == auth.ACCEPT


def test_an_ipv6_client_is_counted_by_its_slash_64():
    throttle = auth.Throttle(clock=Clock())
    for n in range(auth.ADDRESS_FAILURES):
        fail(throttle, f"user{n}@example.com", f"2001:db8:1:2::{n + 1:x}")
    assert throttle.decide("new@example.com", "2001:db8:1:2:ffff::1")[0] == auth.REJECT
    assert auth.client_key("::ffff:192.0.2.1") == "192.0.2.1"


def test_limits_open_again_after_the_window():
    clock = Clock()
    throttle = auth.Throttle(clock=clock)
    for n in range(auth.ACCOUNT_FAILURES):
        fail(throttle, "alice@example.com", f"192.0.2.{n}")
    clock.now += auth.WINDOW + 1
    assert throttle.decide("alice@example.com", "192.0.2.200")[0] == auth.ACCEPT


def test_memory_is_bounded_whatever_the_number_of_accounts_tried():
    throttle = auth.Throttle(clock=Clock(), max_keys=100)
    for n in range(1000):
        fail(throttle, f"user{n}@example.com", f"10.0.{n // 250}.{n % 250}")
    assert len(throttle.accounts.times) <= 100 and len(throttle.addresses.times) <= 100


def test_a_malformed_request_is_answered_without_a_decision():
    throttle = auth.Throttle(clock=Clock())
    assert auth.answer(throttle, "allow", b"not json") == {"status": auth.ACCEPT, "msg": "malformed request"}
    assert auth.answer(throttle, "allow", b"[1]")["status"] == auth.ACCEPT
    assert auth.answer(throttle, "report", b'{"login": "a", "remote": "192.0.2.1", "success": true}') == {"status": 0}


def test_every_guard_unit_runs_a_script_the_bundle_installs_and_starts_with_its_service(tmp_path):
    from mailstack.local.host import exec_start
    from tests.unit.test_host_files import render

    files = render(tmp_path)
    for unit, (_, guarded) in hostfiles.GUARDS.items():
        command = exec_start(files[f"/etc/systemd/system/{unit}.service"].content)
        assert command[0] == "/usr/bin/python3" and files[command[1]].mode == "0755"
        assert f"Wants={unit}.service" in files[f"/etc/systemd/system/{guarded}.service.d/{unit}.conf"].content
    assert files[f"{hostfiles.GUARD_DIR}/quota-policy"].mode == "0755"
