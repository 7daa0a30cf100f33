"""Outbound mail: a probe message seen leaving the host, by the way the stack declares.

The test mailbox submits a probe on 587 to an external address with a DSN
request (RFC 3461: ``NOTIFY=SUCCESS,FAILURE``, an ``ENVID``). The host's
Postfix answers the sender with a delivery report once the next hop (the
relay, SES, or the recipient's MX on port 25) has taken the probe
("relayed", or "delivered") or refused it ("failed"); the report lands in
the test mailbox and is read back over IMAP. No report within the wait means
the probe is still in the host's queue: mail does not leave, and the check
could not observe it leaving, which is an error, never a pass.
"""

from __future__ import annotations

import email
import email.policy
import time
import uuid
from email.message import EmailMessage, Message

from mailstack.checks import Check, Result, Target, error, ok
from mailstack.checks.service import _IMAPS, _SMTP, login_once, tls_context
from mailstack.stack.settings import OutboundRoute

CHECK = "outbound mail"
REPORT_WAIT = 60.0
LEFT = ("relayed", "delivered", "expanded")
"""DSN actions (RFC 3464 2.3.3) that mean the next hop took the message."""

_DECLARE = ("declare how mail leaves the host: mailstack:ses, mailstack:relay (with the secret "
            "mailstack:relay_password), or mailstack:port25_lifted once AWS lifted the port-25 block")


def probe_message(sender: str, probe: str, token: str) -> EmailMessage:
    """The probe: from the test mailbox to the external probe address, tagged with ``token``."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = probe
    message["Subject"] = f"mailstack verify: outbound probe {token}"
    message["X-Mailstack-Probe"] = token
    message.set_content("Sent by mailstack verify to prove that mail leaves the new host. Nothing to do.\n")
    return message


def _status_fields(report: Message) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The per-message fields and each recipient's fields of a delivery report (RFC 3464)."""
    for part in report.walk():
        if part.get_content_type() == "message/delivery-status":
            blocks = [dict((k.lower(), " ".join(str(v).split())) for k, v in block.items())
                      for block in part.get_payload()]
            if blocks:
                return blocks[0], blocks[1:]
    return {}, []


def judge_report(raw: bytes, token: str, route: OutboundRoute | None, probe: str, seconds: float) -> Result | None:
    """What a delivery report says of the probe ``token``; None when the report is about another message."""
    report = email.message_from_bytes(raw, policy=email.policy.compat32)
    envelope, recipients = _status_fields(report)
    if envelope.get("original-envelope-id") != token:
        return None
    mine = [r for r in recipients if probe.lower() in r.get("final-recipient", "").lower()
            or probe.lower() in r.get("original-recipient", "").lower()] or recipients
    if not mine:
        return error(CHECK, f"the delivery report for the probe to {probe} names no recipient",
                     "read the host's mail log for the probe")
    fields = mine[0]
    action, status = fields.get("action", "").lower(), fields.get("status", "")
    remote = fields.get("remote-mta", "").removeprefix("dns;").strip()
    answer = fields.get("diagnostic-code", "").removeprefix("smtp;").strip()
    summary = route.summary if route else "no declared way (no stack given)"
    if action in LEFT:
        detail = f"a probe to {probe} left the host in {seconds:.1f} s: {action} to {remote or 'the next hop'}"
        facts = {"route": route.kind if route else "", "summary": summary, "probe": probe, "action": action,
                 "remote_mta": remote}
        return ok(CHECK, detail + (f" ({answer})" if answer else ""), outbound=facts)
    return error(CHECK, f"the probe to {probe} did not leave: {action or 'no action'} {status}"
                        f"{f' from {remote}' if remote else ''}: {answer or 'no answer given'}",
                 _refused_remedy(route))


def _refused_remedy(route: OutboundRoute | None) -> str:
    if route is None:
        return _DECLARE
    if route.kind == "ses":
        return ("SES refused the probe: check that every domain identity is verified (its DKIM records published by "
                "pulumi up), that the account left the SES sandbox (an account request: SES console, Request "
                "production access) or that the probe goes to a verified address, then verify again")
    if route.kind == "relay":
        return ("the relay refused the probe: check mailstack:relay (host, port, username) and the secret "
                "mailstack:relay_password, and that the relay lets this sender send; its answer is in the detail")
    return ("the receiving server refused the probe: read its answer in the detail; check the host's reverse DNS, "
            "SPF and DKIM records (the DNS checks), then verify again")


def _unseen_remedy(route: OutboundRoute | None) -> str:
    if route is None:
        return _DECLARE
    if route.kind == "port25":
        return ("the probe is waiting in the host's queue: outbound port 25 is probably still blocked; confirm that "
                "AWS lifted it for this account and region (the case in mailstack:port25_lifted), read postqueue -p "
                "and the mail log on the host, then verify again")
    return (f"the probe is waiting in the host's queue: the host cannot reach {route.summary} (relay down, port "
            "blocked, wrong host or credentials); read postqueue -p and the mail log on the host, then verify again")


def undeclared_check(stack: str) -> Check:
    """The outbound check of a stack that declares no way out: an error saying which of the ways to declare."""

    def outbound_mail(target: Target) -> list[Result]:
        return [error(CHECK, f"stack {stack} declares no way for mail to leave the host (EC2 blocks outbound "
                             "port 25 unless AWS lifts it)", _DECLARE)]

    return outbound_mail


def outbound_check(route: OutboundRoute | None, probe: str | None, *, wait: float = REPORT_WAIT) -> Check:
    """The outbound check for verify: the probe goes to ``probe`` by ``route`` (the stack's declaration)."""

    def outbound_mail(target: Target) -> list[Result]:
        if not probe:
            return [error(CHECK, "no probe address to send to",
                          "set mailstack:outbound_probe to an address outside the stack's domains (or give "
                          "--outbound-probe), then verify again")]
        if not (target.user and target.password):
            return [error(CHECK, "no test mailbox given", "give --user and --password-file of a test mailbox")]
        token = uuid.uuid4().hex
        started = time.monotonic()
        try:
            with _SMTP(target, 587) as smtp:
                smtp.starttls(context=tls_context(target))
                login_once(smtp, target.user, target.password)
                if not smtp.has_extn("dsn"):
                    return [error(CHECK, "submission on 587 does not offer DSN, so the probe's fate cannot be read",
                                  "remove dsn from smtpd_discard_ehlo_keywords on the host")]
                smtp.send_message(probe_message(target.user, probe, token), target.user, [probe],
                                  mail_options=["RET=HDRS", f"ENVID={token}"],
                                  rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
        except OSError as exc:  # smtplib's errors are OSErrors too
            return [error(CHECK, f"could not submit the probe on 587: {exc}",
                          "check the test mailbox's password and the submission service (see the delivery checks)")]
        result = _await_report(target, token, route, probe, wait, started)
        if result is None:
            return [error(CHECK, f"no delivery report for the probe to {probe} within {wait:.0f} s: mail was not "
                                 f"seen leaving the host", _unseen_remedy(route))]
        return [result]

    return outbound_mail


def _await_report(target: Target, token: str, route: OutboundRoute | None, probe: str, wait: float,
                  started: float) -> Result | None:
    """Poll the test mailbox for the report on ``token``; judge it and delete it. None when none came in time."""
    with _IMAPS(target) as imap:
        imap.login(target.user, target.password)
        while True:
            imap.select("INBOX")
            _, data = imap.search(None, "BODY", token)
            for number in (data[0].split() if data and data[0] else []):
                _, fetched = imap.fetch(number, "(BODY.PEEK[])")
                raw = next((item[1] for item in fetched if isinstance(item, tuple)), b"")
                result = judge_report(raw, token, route, probe, time.monotonic() - started)
                if result is not None:
                    imap.store(number, "+FLAGS", "\\Deleted")
                    imap.expunge()
                    return result
            if time.monotonic() - started > wait:
                return None
            time.sleep(0.5)
