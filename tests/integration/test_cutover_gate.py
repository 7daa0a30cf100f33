"""The cutover gate on evidence written by the real `mailstack verify`, and verify's checks that could not observe.

The rendered host (Postfix, Dovecot, OpenDKIM) with its records in Knot, and an
old Dovecot server whose mailboxes were synced to it, all on loopback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.host.records import Dkim, desired_records, dkim_value
from mailstack.imap.endpoint import Endpoint
from mailstack.local import host as local
from mailstack.local.dnsserver import AuthoritativeDns
from mailstack.local.imapserver import DovecotImap, User
from mailstack.local.sink import sink_on_loopback
from mailstack.local.zonefile import reverse_record, reverse_zone
from mailstack.migration.evidence import load_evidence
from mailstack.migration.lifecycle import cutover_gate
from mailstack.stack.passwords import initial_password
from mailstack.stack.roster import load_roster
from mailstack.stack.settings import load_stack_file
from mailstack.sync.accounts import Account
from mailstack.sync.engine import SyncOptions, run_sync
from tests.conftest import PROJECT, require_imap_servers, require_root_and_packages, require_tool, write_roster

pytestmark = pytest.mark.integration

ADDRESS, OLD, NS, CLOSED = "127.0.12.31", "127.0.12.32", "127.0.12.54", "127.0.12.40"
RELAY_ADDRESS = "127.0.40.4"  # an SMTP sink standing in for the stack's relay
HOST = "mail.example.com"
SEED = "cutover-seed-" + "x" * 35
USERS = [f"user{n}@example.com" for n in range(3)]


@pytest.fixture(scope="module")
def relay():
    """The stack's relay, as an SMTP sink on loopback."""
    with sink_on_loopback(RELAY_ADDRESS) as sink:
        yield sink


@pytest.fixture(scope="module")
def world(tmp_path_factory, relay):
    """A project whose stack is the running host, its zone in Knot, and the old server already synced to it."""
    require_imap_servers()
    require_root_and_packages()
    require_tool("knotd")
    project = tmp_path_factory.mktemp("project")
    (project / "stacks/mailboxes").mkdir(parents=True)
    shutil.copy(PROJECT / "Pulumi.yaml", project)
    write_roster(project / "stacks/mailboxes/t.csv", len(USERS), generate_every=1)
    (project / "stacks/Pulumi.t.yaml").write_text(f"""config:
  aws:region: eu-west-1
  mailstack:domains: [example.com]
  mailstack:zone: example.com
  mailstack:host: {{name: {HOST}}}
  mailstack:old_server: {{host: mail.example.net, ip: 192.0.2.25, imap: "imap://{OLD}:143"}}
  mailstack:roster: stacks/mailboxes/t.csv
  mailstack:relay: {{host: smtp.relay.example.net, port: 587}}
  mailstack:outbound_probe: probe@partner.example
""")
    settings = load_stack_file("t", project).settings
    roster = load_roster(project / "stacks/mailboxes/t.csv", domains=settings.domains)
    key = local.new_dkim_key()
    public = subprocess.run(["openssl", "pkey", "-pubout"], input=key, capture_output=True, text=True, check=True).stdout
    old = DovecotImap(OLD, [User(a.split("@")[0], f"old-{n}") for n, a in enumerate(USERS)], separator=".",
                      prefix="INBOX.")
    with old, local.running(settings, roster, address=ADDRESS, password_seed=SEED, dkim_private_key=key,
                            relayhost=f"[{RELAY_ADDRESS}]:25") as host, \
            AuthoritativeDns(NS, [settings.zone, reverse_zone(ADDRESS)]) as dns:
        dns.serve(desired_records(settings, ip=ADDRESS, dkim=Dkim("mail", dkim_value(public)))
                  + [reverse_record(ADDRESS, HOST)])
        accounts = [Account(a.split("@")[0], f"old-{n}", a, initial_password(SEED, a)) for n, a in enumerate(USERS)]
        for account in accounts:
            old.create_folder(account.source_user, "Sent")
            client = old.client(account.source_user)
            try:
                client.append("INBOX", None, None, _message(account.source_user))
                client.append("INBOX.Sent", None, None, _message(account.source_user + "-sent"))
            finally:
                client.logout()
        results = run_sync(accounts, Endpoint("imap", OLD, 143), Endpoint("imaps", HOST, 993, str(host.ca_cert), ADDRESS),
                           SyncOptions(state_dir=project / "sync-state"))
        assert all(r.in_sync for r in results), [r.errors for r in results]
        yield project, settings, host, dns, accounts


def _message(tag: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = "someone@example.org"
    mail["Subject"] = f"before the cutover {tag}"
    mail["Message-ID"] = f"<{tag}@example.org>"
    mail.set_content("hello\n")
    return mail.as_bytes().replace(b"\n", b"\r\n")


def accounts_file(path: Path, accounts) -> Path:
    path.write_text("source_user,source_password,target_user,target_password\n"
                    + "".join(f"{a.source_user},{a.source_password},{a.target_user},{a.target_password}\n" for a in accounts))
    return path


def verify_record(world, tmp_path, monkeypatch, *extra: str):
    project, _, host, dns, _ = world
    (tmp_path / "pw").write_text(initial_password(SEED, USERS[0]) + "\n")
    monkeypatch.chdir(project)
    monkeypatch.delenv("MAILSTACK_SYNC_ACCOUNTS", raising=False)
    (project / "stacks/evidence").mkdir(exist_ok=True)
    (project / "stacks/evidence/t.json").write_text(json.dumps({
        "previous_mx_ttl": 3600, "lowered_ttl_seen_at": (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()}))
    return CliRunner().invoke(app, [
        "verify", "-s", "t", "--address", ADDRESS, "--user", USERS[0], "--password-file", str(tmp_path / "pw"),
        "--cafile", str(host.ca_cert), "--dns-server", dns.server, "--dkim-selector", "mail", "--record", *extra])


def gate(world):
    project, settings, _, _, _ = world
    evidence = load_evidence(project / "stacks/evidence/t.json")
    return cutover_gate(settings, evidence, datetime.now(timezone.utc), host_name=HOST, host_ip=ADDRESS, roster=USERS)


def test_a_verification_without_the_mailbox_comparison_does_not_open_the_cutover(world, tmp_path, monkeypatch):
    done = verify_record(world, tmp_path, monkeypatch)
    assert done.exit_code == 0, done.output
    assert "not checked: mailboxes match old server" in done.output
    assert gate(world).reasons == (
        "the verification compared no mail of 3 roster mailbox(es) with the old server: user0@example.com, "
        "user1@example.com, user2@example.com: run mailstack verify -s ENV --record --accounts FILE with a row for "
        "each (the sync's accounts file), or list them in mailstack:exempt_mailboxes with a reason",)


def test_a_verification_comparing_part_of_the_roster_names_the_mailboxes_left_out(world, tmp_path, monkeypatch):
    partial = accounts_file(tmp_path / "a.csv", world[4][:2])
    done = verify_record(world, tmp_path, monkeypatch, "--accounts", str(partial))
    assert done.exit_code == 0, done.output
    (reason,) = gate(world).reasons
    assert reason.startswith("the verification compared no mail of 1 roster mailbox(es) with the old server: "
                             "user2@example.com:")


def test_a_verification_comparing_every_roster_mailbox_opens_the_cutover(world, tmp_path, monkeypatch):
    every = accounts_file(tmp_path / "a.csv", world[4])
    done = verify_record(world, tmp_path, monkeypatch, "--accounts", str(every))
    assert done.exit_code == 0, done.output
    assert "3 mailboxes, 6 folders" in done.output
    assert gate(world).allowed, gate(world).reasons
    proof = load_evidence(world[0] / "stacks/evidence/t.json").verification.outbound
    assert (proof.route, proof.summary, proof.probe, proof.action) == (
        "relay", "relay smtp.relay.example.net:587", "probe@partner.example", "relayed")


def test_a_relay_refusing_the_probe_fails_verify_and_the_cutover_stays_refused(world, relay, tmp_path, monkeypatch):
    every = accounts_file(tmp_path / "a.csv", world[4])
    relay.refuse_with = "554 5.7.1 Sending suspended for this account"
    try:
        done = verify_record(world, tmp_path, monkeypatch, "--accounts", str(every), "--json")
    finally:
        relay.refuse_with = None
    assert done.exit_code == 3, done.output
    results = {r["check"]: r for r in json.loads(done.stdout)["results"]}
    assert results["outbound mail"]["status"] == "error"
    assert "Sending suspended for this account" in results["outbound mail"]["detail"]
    assert [r for r in results.values() if r["status"] == "error"] == [results["outbound mail"]]
    assert gate(world).reasons[0] == (
        "no verification evidence: run mailstack verify -s ENV --record against mail.example.com first")


# ------------------------------------------------------------------ probes that could not run


def verify_json(*args: str) -> dict[str, dict]:
    done = CliRunner().invoke(app, ["verify", "--domain", "example.com", "--dns-server", CLOSED, "--json", *args])
    assert done.exit_code == 3
    return {r["check"]: r for r in json.loads(done.stdout)["results"]}


def test_verify_against_an_unresolvable_host_reports_errors_never_ok():
    results = verify_json("--host", "mail.nothing.invalid")
    assert [name for name, r in results.items() if r["status"] == "ok"] == []
    tls = results["TLS 1.2 minimum"]
    assert tls["status"] == "error" and tls["detail"].startswith("could not probe port 465, 587, 993, 995: 465: no connection")


def test_verify_against_a_closed_port_reports_errors_never_ok():
    results = verify_json("--host", HOST, "--address", CLOSED)
    assert [name for name, r in results.items() if r["status"] == "ok"] == []
    assert "Connection refused" in results["TLS 1.2 minimum"]["detail"]
    assert results["port 993"]["status"] == "error"
    assert results["auth before starttls"]["detail"].startswith("could not run: ConnectionRefusedError")


def test_the_tls_floor_states_what_each_port_answered(world):
    _, _, host, _, _ = world
    from mailstack.checks import Target
    from mailstack.checks.service import tls_floor

    (result,) = tls_floor(Target(HOST, "example.com", address=ADDRESS, cafile=str(host.ca_cert)))
    assert result.status.value == "ok"
    assert [part.split(":")[0] for part in result.detail.split(": ", 1)[1].split("; ")] == ["465", "587", "993", "995"]
    assert all("refused" in part or "closed at the TLS" in part for part in result.detail.split("; "))
