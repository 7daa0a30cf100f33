"""Outlook's Autodiscover (POX) answer: the same servers as the Thunderbird autoconfig.

The host serves one static file for every address (GET and POST, see
templates/nginx/mailstack.conf.j2): it names no ``LoginName``, so Outlook
logs in with the address the user typed, which is the user name on this host.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from mailstack.clients.values import Server, Servers

RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
_TYPES = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP"}


def _protocol(account: ET.Element, server: Server) -> None:
    protocol = ET.SubElement(account, "Protocol")
    values = {
        "Type": _TYPES[server.kind],
        "Server": server.host,
        "Port": str(server.port),
        "DomainRequired": "off",
        "SPA": "off",  # defaults to on: Secure Password Authentication is NTLM, which this host does not speak
        "SSL": "on",
        "AuthRequired": "on",
    }
    if server.kind == "smtp":
        # The same user name and password as for reading mail.
        values["UsePOPAuth"] = "on"
        values["SMTPLast"] = "off"
        # Outlook 2010+: 465 is TLS from the first byte, 587 negotiates it.
        values["Encryption"] = "SSL" if server.security == "ssl" else "TLS"
    for name, text in values.items():
        ET.SubElement(protocol, name).text = text


def autodiscover_xml(servers: Servers) -> str:
    """The POX Autodiscover response: IMAP first (Outlook takes the first it can use), POP3, then SMTP 465."""
    root = ET.Element("Autodiscover", xmlns=RESPONSE_NS)
    response = ET.SubElement(root, "Response", xmlns=OUTLOOK_NS)
    account = ET.SubElement(response, "Account")
    ET.SubElement(account, "AccountType").text = "email"
    ET.SubElement(account, "Action").text = "settings"
    for server in (servers.imap, servers.pop3, servers.smtp[0]):
        _protocol(account, server)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
