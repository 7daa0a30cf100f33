"""nginx from the rendered tree: Thunderbird autoconfig over HTTP and the MTA-STS policy over HTTPS."""

from __future__ import annotations

import http.client
import socket
import ssl

import pytest

from mailstack.stack.roster import load_roster
from mailstack.stack.settings import settings_from_values
from tests.conftest import require_imap_servers, require_tool, stack_values, write_roster
from tests.integration.webserver import rendered_web

pytestmark = pytest.mark.integration

ADDRESS = "127.0.3.40"


@pytest.fixture
def nginx(tmp_path):
    require_tool("nginx")
    require_tool("openssl")
    require_imap_servers()  # root, for the loopback address and ports 80/443
    settings = settings_from_values(stack_values(tmp_path / "r.csv"), source="t")
    roster = load_roster(write_roster(tmp_path / "r.csv", 3), domains=settings.domains)
    with rendered_web(settings, roster, ADDRESS) as (files, cert):
        yield settings, files, cert


def get(connection: http.client.HTTPConnection, host: str, path: str) -> http.client.HTTPResponse:
    connection.request("GET", path, headers={"Host": host})
    return connection.getresponse()


def test_autoconfig_is_served_over_http_and_everything_else_redirects_to_https(nginx):
    settings, files, _ = nginx
    response = get(http.client.HTTPConnection(ADDRESS, 80, timeout=5), f"autoconfig.{settings.primary_domain}",
                   "/mail/config-v1.1.xml")
    assert response.status == 200
    assert response.read().decode() == files["/var/www/mailstack/mail/config-v1.1.xml"].content
    moved = get(http.client.HTTPConnection(ADDRESS, 80, timeout=5), f"mta-sts.{settings.primary_domain}",
                "/.well-known/mta-sts.txt")
    assert moved.status == 301 and moved.getheader("Location").startswith("https://mta-sts.")


def test_the_mta_sts_policy_is_served_over_tls_1_2_or_newer_for_its_name(nginx):
    settings, files, cert = nginx
    name = f"mta-sts.{settings.primary_domain}"
    context = ssl.create_default_context(cafile=str(cert))
    connection = http.client.HTTPSConnection(ADDRESS, 443, timeout=5, context=context)
    connection.sock = context.wrap_socket(socket.create_connection((ADDRESS, 443), timeout=5),
                                          server_hostname=name)
    response = get(connection, name, "/.well-known/mta-sts.txt")
    assert response.status == 200 and response.getheader("Content-Type") == "text/plain"
    policy = response.read().decode()
    assert policy == files["/var/www/mailstack/.well-known/mta-sts.txt"].content and "mode: testing" in policy
    assert connection.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert get(connection, name, "/anything-else").status == 404


def test_port_80_redirects_to_a_name_of_its_own_never_the_requests_host_header(nginx):
    settings, _, _ = nginx
    for host in ("evil.example.net", settings.host.name, f"autoconfig.{settings.primary_domain}"):
        moved = get(http.client.HTTPConnection(ADDRESS, 80, timeout=5), host, "/anything?x=1")
        location = moved.getheader("Location")
        assert moved.status == 301 and "evil" not in location, location
        expected = host if host != "evil.example.net" else settings.host.name
        assert location == f"https://{expected}/anything?x=1"


def test_nginx_does_not_show_its_version(nginx):
    settings, _, _ = nginx
    response = get(http.client.HTTPConnection(ADDRESS, 80, timeout=5), settings.host.name, "/")
    body = response.read().decode()
    assert response.getheader("Server") == "nginx" and "nginx/" not in body
