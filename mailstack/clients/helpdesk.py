"""The helpdesk's list: one CSV row per mailbox with every value its sheet gives."""

from __future__ import annotations

import csv
import io

from mailstack.clients.values import MailboxSettings

COLUMNS = ("address", "name", "protocol", "user_name", "incoming_server", "incoming_port", "incoming_security",
           "outgoing_server", "outgoing_port", "outgoing_security", "outgoing_port_alternative",
           "outgoing_security_alternative", "password", "quota", "switch_date", "keep_old_account_until")


def _password_cell(values: MailboxSettings, with_passwords: bool) -> str:
    if values.password_status == "generated":
        return values.password if with_passwords and values.password else "generated (on the sheet)"
    if values.password_status == "ask-helpdesk":
        return "generated (not known: give the seed)"
    return "unchanged"


def helpdesk_csv(mailboxes: list[MailboxSettings], *, with_passwords: bool = False) -> str:
    """The CSV text; passwords only ``with_passwords``. Excel-friendly: the caller writes it with a BOM."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for m in mailboxes:
        first, second = m.outgoing[0], m.outgoing[1]
        writer.writerow([m.address, m.name, m.protocol, m.user_name, m.incoming.host, m.incoming.port,
                         m.incoming.security_shown, first.host, first.port, first.security_shown, second.port,
                         second.security_shown, _password_cell(m, with_passwords), m.quota,
                         m.switch.day.isoformat(), m.switch.keep_old_until.isoformat()])
    return out.getvalue()
