"""Autoconfig and Autodiscover fetched from the real nginx of the host templates: the same values as the sheets."""

from __future__ import annotations

import http.client
import socket
import ssl
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

import pytest

from mailstack.clients.sheet import sheet_html
from mailstack.clients.values import mailbox_settings, switch_dates
from mailstack.stack.roster import load_roster
from mailstack.stack.settings import settings_from_values
from tests.conftest import require_imap_servers, require_tool, stack_values, write_roster
from tests.integration.webserver import rendered_web
from tests.unit.test_clients import autoconfig_servers, autodiscover_protocols

pytestmark = pytest.mark.integration

ADDRESS = "127.0.14.1"
REQUEST = (b'<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
           b'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>user1@example.com</EMailAddress>'
           b'<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/'
           b'2006a</AcceptableResponseSchema></Request></Autodiscover>')


@pytest.fixture
def web(tmp_path):
    """nginx serving the rendered web files of a stack on ADDRESS (80 and 443), with a self-signed certificate."""
    require_tool("nginx")
    require_tool("openssl")
    require_imap_servers()  # root: the loopback address and ports 80/443
    roster_path = write_roster(tmp_path / "r.csv", 3)
    settings = settings_from_values(stack_values(roster_path), source="t")
    roster = load_roster(roster_path, domains=settings.domains)
    with rendered_web(settings, roster, ADDRESS) as (_, cert):
        yield settings, roster, cert


def https(name: str, cert: Path) -> http.client.HTTPSConnection:
    """A connection to ADDRESS that checks the certificate for ``name``, as a client resolving the name would."""
    context = ssl.create_default_context(cafile=str(cert))
    connection = http.client.HTTPSConnection(ADDRESS, 443, timeout=5, context=context)
    connection.sock = context.wrap_socket(socket.create_connection((ADDRESS, 443), timeout=5), server_hostname=name)
    return connection


def fetch(connection, method: str, host: str, path: str, body: bytes | None = None) -> tuple[int, str, str]:
    headers = {"Host": host}
    if body is not None:
        headers["Content-Type"] = "text/xml"
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.getheader("Content-Type") or "", response.read().decode()


def test_autodiscover_answers_outlooks_post_and_a_get_with_the_sheets_values(web):
    settings, roster, cert = web
    name = f"autodiscover.{settings.primary_domain}"
    answers = [fetch(https(name, cert), "POST", name, "/autodiscover/autodiscover.xml", REQUEST),
               fetch(https(name, cert), "POST", name, "/Autodiscover/Autodiscover.xml", REQUEST),
               fetch(https(name, cert), "GET", name, "/autodiscover/autodiscover.xml")]
    assert [(status, kind) for status, kind, _ in answers] == [(200, "text/xml")] * 3
    assert answers[0][2] == answers[1][2] == answers[2][2]
    protocols = autodiscover_protocols(answers[0][2])
    switch = switch_dates(date(2027, 1, 15), settings.overlap_days)
    for mailbox in roster:
        sheet = mailbox_settings(mailbox, settings, switch, password_seed=None)
        served = protocols["POP3" if mailbox.protocol == "pop" else "IMAP"]
        assert (served["Server"], int(served["Port"]), served["SSL"]) == (sheet.incoming.host, sheet.incoming.port, "on")
        smtp = protocols["SMTP"]
        assert (smtp["Server"], int(smtp["Port"]), smtp["Encryption"]) == (sheet.outgoing[0].host, sheet.outgoing[0].port, "SSL")
        html = sheet_html(sheet, "en", date(2026, 12, 1))
        assert f">{served['Port']}<" in html and f">{smtp['Port']}<" in html and served["Server"] in html


def test_outlooks_http_redirect_method_is_sent_to_autodiscover_over_https_with_a_302(web):
    """MS-OXDISCO 3.1.5.4: a GET over plain HTTP, and only a 302 is followed; Outlook then POSTs to its Location."""
    settings, _, cert = web
    name = f"autodiscover.{settings.primary_domain}"
    plain = http.client.HTTPConnection(ADDRESS, 80, timeout=5)
    for path in ("/Autodiscover/Autodiscover.xml", "/autodiscover/autodiscover.xml"):
        plain.request("GET", path, headers={"Host": name})
        moved = plain.getresponse()
        moved.read()
        assert moved.status == 302 and moved.getheader("Location") == f"https://{name}/autodiscover/autodiscover.xml"
    status, kind, answer = fetch(https(name, cert), "POST", name, "/autodiscover/autodiscover.xml", REQUEST)
    assert (status, kind) == (200, "text/xml") and autodiscover_protocols(answer)["IMAP"]


def test_autoconfig_over_http_and_https_gives_the_sheets_values(web):
    settings, roster, cert = web
    name = f"autoconfig.{settings.primary_domain}"
    plain = fetch(http.client.HTTPConnection(ADDRESS, 80, timeout=5), "GET", name, "/mail/config-v1.1.xml")
    secure = fetch(https(name, cert), "GET", name, "/mail/config-v1.1.xml")
    assert plain[0] == secure[0] == 200 and plain[2] == secure[2]
    servers = autoconfig_servers(plain[2])
    hosts = {s.findtext("hostname") for s in ET.fromstring(plain[2]).iter() if s.findtext("hostname")}
    switch = switch_dates(date(2027, 1, 15), settings.overlap_days)
    for mailbox in roster:
        sheet = mailbox_settings(mailbox, settings, switch, password_seed=None)
        kind = "pop3" if mailbox.protocol == "pop" else "imap"
        assert ("incomingServer", kind, sheet.incoming.port, "SSL") in servers
        assert [(s[2], s[3]) for s in servers if s[0] == "outgoingServer"] == [
            (server.port, "SSL" if server.security == "ssl" else "STARTTLS") for server in sheet.outgoing]
        assert hosts == {sheet.incoming.host}


def test_nothing_else_is_served_with_a_post(web):
    settings, _, cert = web
    name = f"autodiscover.{settings.primary_domain}"
    status, _, _ = fetch(https(name, cert), "POST", name, "/autodiscover/other.xml", REQUEST)
    assert status == 404
