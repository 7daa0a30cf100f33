"""DNS checks against a real authoritative server (Knot on loopback) serving the stack's records."""

from __future__ import annotations

import dataclasses

import pytest

from mailstack.checks import Status, Target
from mailstack.checks.dns import dns_checks
from mailstack.local.dnsserver import AuthoritativeDns
from mailstack.host.records import Dkim, Record, desired_records
from mailstack.stack.settings import settings_from_values
from mailstack.local.zonefile import reverse_record, reverse_zone
from tests.conftest import require_tool, stack_values

pytestmark = pytest.mark.integration

ADDRESS = "127.0.5.1"
IP = "203.0.113.25"
KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "x" * 300 + "IDAQAB"
SETTINGS = settings_from_values(stack_values("r.csv"), source="t")
DKIM = Dkim("mail", f"v=DKIM1; k=rsa; p={KEY}")


def stack_records() -> list[Record]:
    return desired_records(SETTINGS, ip=IP, dkim=DKIM) + [reverse_record(IP, "mail.example.com")]


@pytest.fixture(scope="module")
def server():
    require_tool("knotd")
    with AuthoritativeDns(ADDRESS, ["example.com", reverse_zone(IP)]) as dns_server:
        yield dns_server


@pytest.fixture
def serve(server):
    def serve(records):
        server.serve(records)
        return Target(host="mail.example.com", domain="example.com", dns_server=server.server,
                      dkim_selector="mail", dkim_public_key=KEY, mta_sts=True)
    return serve


def by_check(target) -> dict[str, object]:
    return {r.check: r for r in dns_checks(target)}


def without(records, name, rtype) -> list[Record]:
    return [r for r in records if not (r.name == name and r.type == rtype)]


def replaced(records, name, rtype, *values) -> list[Record]:
    return [dataclasses.replace(r, values=values) if (r.name == name and r.type == rtype) else r for r in records]


def test_the_stacks_own_records_pass_every_dns_check(serve):
    results = by_check(serve(stack_records()))
    assert {name: r.status for name, r in results.items()} == {
        name: Status.OK for name in ("host address", "reverse DNS", "SPF", "DKIM", "DMARC", "MTA-STS", "TLS-RPT")}
    assert results["DKIM"].detail == "key published at mail._domainkey.example.com and matches the signer"


def test_missing_host_address_is_an_error_with_its_remedy(serve):
    result = by_check(serve(without(stack_records(), "mail.example.com", "A")))["host address"]
    assert result.status is Status.ERROR and result.remedy.startswith("publish the A record of mail.example.com")


def test_wrong_ptr_is_an_error(serve):
    records = [r for r in stack_records() if r.type != "PTR"] + [reverse_record(IP, "ec2-203-0-113-25.compute.example")]
    result = by_check(serve(records))["reverse DNS"]
    assert result.status is Status.ERROR
    assert result.detail == f"{IP} -> ec2-203-0-113-25.compute.example."
    assert "reverse DNS to mail.example.com" in result.remedy


def test_missing_spf_is_an_error(serve):
    result = by_check(serve(without(stack_records(), "example.com", "TXT")))["SPF"]
    assert result.status is Status.ERROR and result.detail == "example.com publishes no SPF record"


def test_spf_without_the_new_host_is_an_error(serve):
    result = by_check(serve(replaced(stack_records(), "example.com", "TXT", "v=spf1 ip4:192.0.2.25 -all")))["SPF"]
    assert result.status is Status.ERROR and "does not authorise mail.example.com" in result.detail


def test_two_spf_records_are_an_error(serve):
    records = replaced(stack_records(), "example.com", "TXT", "v=spf1 a:mail.example.com ~all", "v=spf1 -all")
    assert by_check(serve(records))["SPF"].detail == "example.com publishes 2 SPF records (a permanent error for receivers)"


def test_dkim_key_other_than_the_signers_is_an_error(serve):
    records = replaced(stack_records(), "mail._domainkey.example.com", "TXT", "v=DKIM1; k=rsa; p=MIIBotherkey")
    result = by_check(serve(records))["DKIM"]
    assert result.status is Status.ERROR and result.detail == "the key at mail._domainkey.example.com is not the signer's key"


def test_missing_dkim_key_is_an_error(serve):
    result = by_check(serve(without(stack_records(), "mail._domainkey.example.com", "TXT")))["DKIM"]
    assert result.status is Status.ERROR and result.detail == "no DKIM key published at mail._domainkey.example.com"


def test_missing_dmarc_is_an_error(serve):
    result = by_check(serve(without(stack_records(), "_dmarc.example.com", "TXT")))["DMARC"]
    assert result.status is Status.ERROR and "v=DMARC1; p=none" in result.remedy


def test_missing_mta_sts_and_tls_rpt_are_errors_when_configured(serve):
    records = without(without(stack_records(), "_mta-sts.example.com", "TXT"), "_smtp._tls.example.com", "TXT")
    results = by_check(serve(records))
    assert results["MTA-STS"].status is Status.ERROR and results["TLS-RPT"].status is Status.ERROR


def test_dkim_is_looked_up_at_the_stacks_configured_selector(serve):
    settings = settings_from_values(stack_values("r.csv", dns={"dkim_selector": "s2026"}), source="t")
    published = desired_records(settings, ip=IP, dkim=Dkim(settings.dns.dkim_selector, DKIM.txt))
    target = dataclasses.replace(serve(published), dkim_selector=settings.dns.dkim_selector)
    result = by_check(target)["DKIM"]
    assert result.status is Status.OK and result.detail == "key published at s2026._domainkey.example.com and matches the signer"
    # The same key at the old default selector only: not where the host signs.
    elsewhere = dataclasses.replace(serve(stack_records()), dkim_selector="s2026")
    assert by_check(elsewhere)["DKIM"].detail == "no DKIM key published at s2026._domainkey.example.com"


def test_without_a_selector_the_dkim_check_is_an_error_not_a_pass(serve):
    result = by_check(dataclasses.replace(serve(stack_records()), dkim_selector=None))["DKIM"]
    assert result.status is Status.ERROR and "no DKIM selector" in result.detail
