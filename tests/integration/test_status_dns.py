"""`mailstack status` reads MX propagation from real authoritative servers (two Knot instances)."""

from __future__ import annotations

import pytest

from mailstack.local.dnsserver import AuthoritativeDns
from mailstack.host.records import Record
from mailstack.migration.status import authoritative_answers, propagation, resolver_answers
from tests.conftest import require_tool

pytestmark = pytest.mark.integration

NS = [("ns1.example.com", "127.0.5.2"), ("ns2.example.com", "127.0.5.3")]
NEW, OLD = "mail.example.com", "mail.example.net"


def mx(host: str, ttl: int) -> list[Record]:
    return [Record("example.com", "MX", (f"10 {host}.",), ttl, "test")]


@pytest.fixture(scope="module")
def servers():
    require_tool("knotd")
    with AuthoritativeDns(NS[0][1], ["example.com"], nameservers=NS) as ns1, \
            AuthoritativeDns(NS[1][1], ["example.com"], nameservers=NS) as ns2:
        yield ns1, ns2


def test_every_authoritative_server_is_asked_directly(servers):
    ns1, ns2 = servers
    ns1.serve(mx(OLD, 86400))
    ns2.serve(mx(OLD, 86400))
    answers = authoritative_answers("example.com", "example.com", ns1.server)
    assert [(a.server, a.hosts, a.ttl, a.authoritative) for a in answers] == [
        ("ns1.example.com (127.0.5.2)", (OLD,), 86400, True), ("ns2.example.com (127.0.5.3)", (OLD,), 86400, True)]


def test_a_server_still_serving_the_old_mx_shows_as_mixed_propagation(servers):
    ns1, ns2 = servers
    ns1.serve(mx(NEW, 300))
    ns2.serve(mx(OLD, 300))
    answers = authoritative_answers("example.com", "example.com", ns1.server)
    assert propagation(answers, NEW, OLD) == "mixed"
    ns2.serve(mx(NEW, 300))
    assert propagation(authoritative_answers("example.com", "example.com", ns2.server), NEW, OLD) == "new"


def test_resolvers_are_reported_with_their_ttl(servers):
    ns1, ns2 = servers
    ns1.serve(mx(NEW, 300))
    answers = resolver_answers("example.com", [ns1.server, "127.0.5.4:53"])
    assert answers[0].hosts == (NEW,) and answers[0].ttl == 300 and not answers[0].authoritative
    assert answers[1].error  # nothing listens there: reported, not raised
