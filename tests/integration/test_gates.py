"""The decommission gate and the rollback, through the real commands: sync, status, preview, sync --reverse.

Old and new Dovecot servers and a Knot name server on loopback; the stack is a
copy of the project with a two-mailbox roster. Evidence that only time can
make (the cutover two weeks ago, a backup) is written into the evidence file
first; everything the gates are tested on is measured by the commands.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.host.records import Record
from mailstack.local.dnsserver import AuthoritativeDns
from mailstack.local.imapserver import DovecotImap, User
from tests.conftest import PROJECT, require_imap_servers, require_tool
from tests.integration.test_mailbox_checks import message

pytestmark = pytest.mark.integration

OLD, NEW, NS = "127.0.12.21", "127.0.12.22", "127.0.12.53"
NEW_HOST, OLD_HOST = "mail.example.com", "mail.example.net"
USERS = {"alice": "alice@example.com", "bob": "bob@example.com"}
T0 = 1_700_000_000


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Old and new servers, the zone's name server, and a project whose stack points at them."""
    require_imap_servers()
    require_tool("knotd")
    old = DovecotImap(OLD, [User(u, f"old-{u}") for u in USERS], separator=".", prefix="INBOX.")
    new = DovecotImap(NEW, [User(a, f"new-{u}") for u, a in USERS.items()])
    project = tmp_path / "project"
    (project / "stacks" / "mailboxes").mkdir(parents=True)
    shutil.copy(PROJECT / "Pulumi.yaml", project)
    (project / "stacks/mailboxes/t.csv").write_text(
        "address,name,quota,protocol,aliases,password\n"
        + "".join(f"{a},{u},1G,imap,,generate\n" for u, a in USERS.items()))
    (project / "stacks/Pulumi.t.yaml").write_text(f"""config:
  aws:region: eu-west-1
  mailstack:phase: provision
  mailstack:domains: [example.com]
  mailstack:zone: example.com
  mailstack:host: {{name: {NEW_HOST}}}
  mailstack:old_server: {{host: {OLD_HOST}, ip: 192.0.2.25, imap: "imap://{OLD}:143"}}
  mailstack:roster: stacks/mailboxes/t.csv
""")
    monkeypatch.chdir(project)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with old, new, AuthoritativeDns(NS, ["example.com"]) as dns:
        yield old, new, dns, project


def fill(server: DovecotImap, user: str, numbers: range, *, arrived: float = T0) -> None:
    """Messages dropped into INBOX as a delivery would leave them (``arrived`` + n their arrival)."""
    for part in ("cur", "new", "tmp"):
        (server.maildir(user) / part).mkdir(parents=True, exist_ok=True)
    for n in numbers:
        server.write_message(user, "INBOX", message(n), internaldate=arrived + n, unique=f"{int(arrived) + n}.{user}{n}")
    server.resync(user)


def accounts_file(path: Path, *users: str) -> Path:
    path.write_text("source_user,source_password,target_user,target_password\n"
                    + "".join(f"{u},old-{u},{USERS[u]},new-{u}\n" for u in users))
    return path


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def sync(accounts: Path, *extra: str):
    return run("sync", "-s", "t", "--target", f"imap://{NEW}", "--accounts", str(accounts), *extra)


def status(accounts: Path | None = None, *extra: str):
    return run("status", "-s", "t", "--record", "--dns-server", NS, *(["--accounts", str(accounts)] if accounts else []),
               *extra)


def serve_mx(dns: AuthoritativeDns, host: str) -> None:
    dns.serve([Record("example.com", "MX", (f"10 {host}.",), 300, "test")])


def preview(project: Path, phase: str) -> subprocess.CompletedProcess:
    """`mailstack preview -s t` of ``phase``, as its own process: what `pulumi up` would decide."""
    stack = project / "stacks/Pulumi.t.yaml"
    stack.write_text(stack.read_text().replace("mailstack:phase: provision", f"mailstack:phase: {phase}"))
    try:
        return subprocess.run([sys.executable, "-m", "mailstack.cli", "preview", "-s", "t"], cwd=project,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(PROJECT)})
    finally:
        stack.write_text(stack.read_text().replace(f"mailstack:phase: {phase}", "mailstack:phase: provision"))


def evidence(project: Path) -> dict:
    return json.loads((project / "stacks/evidence/t.json").read_text())


def seed_evidence(project: Path, **parts) -> None:
    path = project / "stacks/evidence/t.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**current, **parts}))


def ago(**delta) -> str:
    return (datetime.now(timezone.utc) - timedelta(**delta)).isoformat()


def refusals(done: subprocess.CompletedProcess) -> list[str]:
    return [line.split("decommission refused: ", 1)[1] for line in (done.stdout + done.stderr).splitlines()
            if "decommission refused: " in line]


# ------------------------------------------------------------------ decommission


def test_decommission_needs_a_final_sync_and_a_measured_quiet_period_of_every_roster_mailbox(world, tmp_path):
    old, new, dns, project = world
    serve_mx(dns, NEW_HOST)
    seed_evidence(project, new_mx_first_seen_at=ago(days=15), backup_at=ago(days=20))
    fill(old, "alice", range(5))
    fill(old, "bob", range(5))
    alice_only, both = accounts_file(tmp_path / "alice.csv", "alice"), accounts_file(tmp_path / "both.csv", "alice", "bob")

    # A sync with a one-row accounts file finds nothing more to do for alice...
    assert sync(alice_only).exit_code == 0 and sync(alice_only).exit_code == 0
    assert evidence(project)["synced"]["alice@example.com"]["differences"] == 0
    # ...while bob's mail is still only on the old server, and the old server was never watched: refused.
    refused = preview(project, "decommission")
    assert refused.returncode == 1
    assert refusals(refused) == [
        "the old server was never checked for new mail in 2 roster mailbox(es): alice@example.com, bob@example.com: "
        "a quiet period never measured is not quiet; run mailstack status -s ENV --record --accounts FILE with a "
        "row for each",
        "no sync covered 1 roster mailbox(es): bob@example.com: run mailstack sync -s ENV --accounts FILE with a row "
        "for each, or list them in mailstack:exempt_mailboxes with a reason"]

    # The old server watched for alice only: bob's quiet period is still unmeasured.
    assert status(alice_only).exit_code == 0
    assert refusals(preview(project, "decommission"))[0].startswith(
        "the old server was never checked for new mail in 1 roster mailbox(es): bob@example.com:")

    # Every mailbox synced until nothing is left, and watched: allowed.
    assert sync(both).exit_code == 0
    assert sync(both).exit_code == 0
    assert status(both).exit_code == 0
    recorded = evidence(project)
    assert set(recorded["old_server_checked"]) == set(USERS.values())
    assert {a: s["differences"] for a, s in recorded["synced"].items()} == {a: 0 for a in USERS.values()}
    allowed = preview(project, "decommission")
    assert allowed.returncode == 0 and refusals(allowed) == [], allowed.stderr


def test_mail_reaching_the_old_server_after_the_final_sync_blocks_decommission_until_synced(world, tmp_path):
    old, new, dns, project = world
    serve_mx(dns, NEW_HOST)
    seed_evidence(project, new_mx_first_seen_at=ago(days=15), backup_at=ago(days=20))
    both = accounts_file(tmp_path / "both.csv", "alice", "bob")
    fill(old, "alice", range(3))
    fill(old, "bob", range(3))
    assert sync(both).exit_code == 0 and sync(both).exit_code == 0
    # A straggler reaches bob on the old server after the final sync (arrival times count in whole seconds).
    time.sleep(1.1)
    fill(old, "bob", range(100, 101), arrived=time.time() - 100)
    watched = status(both)
    assert watched.exit_code == 0 and "a final sync is needed" in watched.output
    quiet, stale = refusals(preview(project, "decommission"))
    assert quiet.startswith("mail reached the old server 0.0 h ago; it must be quiet for 3 days (mailstack:quiet_days)")
    assert stale == ("mail reached the old server after the last sync of alice@example.com, bob@example.com: "
                     "sync again")
    assert sync(both).exit_code == 0  # copies the straggler: that sync still found work
    assert refusals(preview(project, "decommission"))[1:] == [
        "the last sync of bob@example.com (1 differences) still found work: sync again until it finds none"]
    assert sync(both).exit_code == 0
    assert refusals(preview(project, "decommission")) == [quiet]  # synced; the quiet period starts again


def test_a_sync_of_some_folders_only_is_not_a_final_sync(world, tmp_path):
    old, new, dns, project = world
    serve_mx(dns, NEW_HOST)
    seed_evidence(project, new_mx_first_seen_at=ago(days=15), backup_at=ago(days=20))
    both = accounts_file(tmp_path / "both.csv", "alice", "bob")
    for user in USERS:
        old.create_folder(user, "Archive")
        fill(old, user, range(2))
    assert sync(both, "--include", "INBOX").exit_code == 0
    assert sync(both, "--include", "INBOX").exit_code == 0
    assert status(both).exit_code == 0
    assert refusals(preview(project, "decommission")) == [
        "the last sync of alice@example.com (--include INBOX), bob@example.com (--include INBOX) left folders or "
        "messages out: sync them again without --include, --since or --max-age"]


# ------------------------------------------------------------------ rollback


def test_a_rollback_copies_the_mail_delivered_to_the_new_host_back_to_the_old_server(world, tmp_path):
    old, new, dns, project = world
    both = accounts_file(tmp_path / "both.csv", "alice", "bob")
    fill(old, "alice", range(4))
    fill(old, "bob", range(3))
    assert sync(both).exit_code == 0

    serve_mx(dns, NEW_HOST)  # cutover: the new MX is served
    assert status().exit_code == 0
    # Mail delivered to the new host during the cutover, and a message read there.
    fill(new, "alice@example.com", range(50, 53), arrived=datetime.now(timezone.utc).timestamp() - 100)
    fill(new, "bob@example.com", range(60, 61), arrived=datetime.now(timezone.utc).timestamp() - 100)
    serve_mx(dns, OLD_HOST)  # rollback: the MX is back on the old server
    rolled = status(both, "--new-host", f"imap://{NEW}", "--json")
    assert rolled.exit_code == 0, rolled.output
    report = json.loads(rolled.stdout)
    assert report["rollback"] and report["reverse_sync_pending"] == sorted(USERS.values())
    assert {w["mailbox"]: w["messages"] for w in report["waiting_on_new_host"]} == {
        "alice@example.com": 3, "bob@example.com": 1}
    assert "--reverse" in preview(project, "provision").stdout  # the next step names the reverse sync

    back = sync(both, "--reverse")
    assert back.exit_code == 0, back.output
    for user, address in USERS.items():
        assert old.snapshot(user).folders == new.snapshot(address).folders  # the same messages, bytes, flags, dates
    again = sync(both, "--reverse", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["mailboxes"][0]["copied"] == 0  # resumable, no duplicates
    after = json.loads(status(both, "--new-host", f"imap://{NEW}", "--json").stdout)
    assert after["reverse_sync_pending"] == [] and after["waiting_on_new_host"] == []
    # A forward sync afterwards recognises what came back and copies nothing twice.
    forward = sync(both, "--json")
    assert forward.exit_code == 0 and all(m["copied"] == 0 for m in json.loads(forward.stdout)["mailboxes"])
