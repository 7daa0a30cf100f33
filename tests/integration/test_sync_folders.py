"""Folders between real Dovecot servers on loopback: names the new server refuses, subscriptions as the user has
them, and the full comparison of flags and keywords (``sync --verify``)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from email.message import EmailMessage

import pytest
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.imap.endpoint import Endpoint
from mailstack.local.imapserver import DovecotImap, User
from mailstack.sync import names
from mailstack.sync.accounts import Account
from mailstack.sync.engine import SyncOptions, run_sync
from tests.conftest import require_imap_servers
from tests.quirkproxy import AddingProxy

pytestmark = pytest.mark.integration

OLD, NEW = "127.0.16.1", "127.0.16.2"
ALICE = Account("alice", "old-a", "alice@example.com", "new-a")
DOT = "\u2024"  # what --map-invalid puts in place of "."


def _servers(**old_options):
    require_imap_servers()
    old = DovecotImap(OLD, [User("alice", "old-a")], **old_options)
    new = DovecotImap(NEW, [User("alice@example.com", "new-a")])
    return old, new


@pytest.fixture
def slash_source():
    """An old server whose separator is ``/`` and whose folders may hold ``.`` (Dovecot LAYOUT=fs)."""
    old, new = _servers(layout="fs")
    with old, new:
        yield old, new


def message(n: int) -> bytes:
    mail = EmailMessage()
    mail["From"] = f"sender{n}@example.org"
    mail["Subject"] = f"message {n}"
    mail["Message-ID"] = f"<{n}@example.org>"
    mail.set_content(f"body {n}\n")
    return mail.as_bytes().replace(b"\n", b"\r\n")


def append(server: DovecotImap, folder: str, count: int, start: int = 0) -> None:
    """``count`` messages into ``folder`` (created and subscribed) over IMAP, as any client would."""
    client = server.client("alice")
    try:
        wire = imaplib_name(server.wire_name(folder))
        if folder != "INBOX":
            assert client.create(wire)[0] == "OK"
            client.subscribe(wire)
        for n in range(start, start + count):
            assert client.append(wire, "(\\Seen)" if n % 2 else "()", None, message(n))[0] == "OK"
    finally:
        client.logout()


def imaplib_name(name: str) -> str:
    from mailstack.imap import utf7

    return '"' + "/".join(utf7.encode(p) for p in name.split("/")) + '"'


def run_cli(tmp_path, *args):
    path = tmp_path / "accounts.csv"
    path.write_text("source_user,source_password,target_user,target_password\nalice,old-a,alice@example.com,new-a\n")
    return CliRunner().invoke(app, ["sync", "--source", f"imap://{OLD}", "--target", f"imap://{NEW}", "--accounts",
                                    str(path), "--state-dir", str(tmp_path / "state"), "--json", *args])


def mapped_names(folders: dict) -> dict:
    return {name.replace(".", DOT): counts for name, counts in folders.items()}


# ------------------------------------------------------------------ folder names the new server refuses


def test_a_refused_folder_is_predicted_reported_with_its_map_and_the_other_folders_are_synced(slash_source, tmp_path):
    old, new = slash_source
    for folder in ("INBOX", "Projects/v2.0", "Zeta", "john.doe"):
        append(old, folder, 5, start=len(folder) * 10)
    source = old.snapshot("alice")
    assert source.message_count() == 20

    dry = run_cli(tmp_path, "--dry-run")
    assert dry.exit_code == 3, dry.output
    folders = {f["folder"]: f for f in json.loads(dry.stdout)["mailboxes"][0]["folders"]}
    assert "refuses '.'" in folders["john.doe"]["errors"][0]
    assert "--map 'john.doe=john_doe'" in folders["john.doe"]["errors"][0]
    assert "--map 'Projects/v2.0=Projects/v2_0'" in folders["Projects/v2.0"]["errors"][0]
    assert folders["Zeta"]["copied"] == 5 and not folders["Zeta"]["errors"]
    assert new.snapshot("alice@example.com").message_count() == 0

    real = run_cli(tmp_path)
    assert real.exit_code == 3, real.output
    report = json.loads(real.stdout)["mailboxes"][0]
    assert report["in_sync"] is False and report["copied"] == 10
    assert len(report["errors"]) == 2 and all("--map" in e for e in report["errors"])
    target = new.snapshot("alice@example.com")
    assert set(target.folders) == {"INBOX", "Zeta"}
    assert target.folders["Zeta"] == source.folders["Zeta"] and target.folders["INBOX"] == source.folders["INBOX"]

    mapped = run_cli(tmp_path, "--map-invalid")
    assert mapped.exit_code == 0, mapped.output
    folders = {f["folder"]: f for f in json.loads(mapped.stdout)["mailboxes"][0]["folders"]}
    assert folders["john.doe"]["target"] == f"john{DOT}doe" and folders["john.doe"]["mapped_from"] == "john.doe"
    target = new.snapshot("alice@example.com")
    assert target.folders == mapped_names(source.folders)
    assert target.subscribed == frozenset(mapped_names(dict.fromkeys(source.subscribed)))
    table = CliRunner().invoke(app, ["sync", "--source", f"imap://{OLD}", "--target", f"imap://{NEW}", "--accounts",
                                     str(tmp_path / "accounts.csv"), "--state-dir", str(tmp_path / "state"),
                                     "--map-invalid"])
    assert table.exit_code == 0
    assert f"john.doe: the new server refuses 'john.doe'; mapped to 'john{DOT}doe' (--map-invalid)" in table.output
    assert new.snapshot("alice@example.com").folders == target.folders  # stable: nothing copied twice


def test_a_folder_refused_at_create_time_is_reported_and_the_others_still_run(slash_source, tmp_path, monkeypatch):
    old, new = slash_source
    for folder in ("john.doe", "Zeta"):
        append(old, folder, 3)
    # Without the prediction, the name reaches the real server's CREATE, which refuses it.
    monkeypatch.setattr(names, "naming_for", names.separator_only)
    (result,) = run_sync([ALICE], Endpoint("imap", OLD, 143), Endpoint("imap", NEW, 143),
                         SyncOptions(state_dir=tmp_path / "state"))
    assert not result.in_sync and result.error is None
    (error,) = result.errors
    assert error.startswith("john.doe: the new server refused the folder 'john.doe' (")
    assert "Character not allowed in mailbox name: '.'" in error and "--map 'john.doe=NEW NAME'" in error
    assert result.folders["Zeta"].copied == 3 and result.folders["INBOX"].errors == []
    assert new.snapshot("alice@example.com").folders["Zeta"] == old.snapshot("alice").folders["Zeta"]


# ------------------------------------------------------------------ subscriptions


def test_a_noselect_parent_in_lsub_is_not_a_subscription(tmp_path):
    old, new = _servers(separator=".", prefix="INBOX.")
    with old, new:
        client = old.client("alice")
        try:
            for name in ("INBOX.A", "INBOX.A.B"):
                assert client.create(name)[0] == "OK"
            client.subscribe("INBOX.A.B")
            client.append("INBOX.A", None, None, message(1))
        finally:
            client.logout()

        def noselect_parent(line: bytes) -> list[bytes]:  # as some servers answer LSUB
            return [b'* LSUB (\\Noselect \\HasChildren) "." INBOX.A'] if line == b'* LSUB () "." INBOX.A.B' else []

        with AddingProxy((OLD, 1143), (OLD, 143), extra=noselect_parent) as proxy:
            (result,) = run_sync([ALICE], Endpoint("imap", OLD, 1143), Endpoint("imap", NEW, 143),
                                 SyncOptions(state_dir=tmp_path / "state"))
        assert proxy.added >= 1  # the quirk was served
        assert result.in_sync, result.errors
        target = new.snapshot("alice@example.com")
        assert target.subscribed == frozenset({"A/B"})
        assert set(target.folders) == {"INBOX", "A", "A/B"}


# ------------------------------------------------------------------ the full comparison: sync --verify


def test_verify_finds_and_repairs_keywords_the_target_lost_with_its_index(tmp_path):
    old, new = _servers()
    with old, new:
        append(old, "Work", 40)
        client = old.client("alice")
        try:
            client.select("Work")
            for uid in range(1, 41):  # 32 distinct keywords over the folder, two per message
                client.uid("STORE", str(uid), "+FLAGS", f"(Kw{uid % 32:02d} Kw{(uid * 7) % 32:02d})")
        finally:
            client.logout()
        source = old.snapshot("alice")
        assert len({f for (_, flags, _) in source.folders["Work"] for f in flags if f.startswith("Kw")}) == 32

        assert run_cli(tmp_path).exit_code == 0
        assert new.snapshot("alice@example.com").folders == source.folders
        damaged = lose_index(new, "Work")
        lost = _keyword_uses(source.folders["Work"]) - _keyword_uses(damaged.folders["Work"])
        assert sum(lost.values()) > 0 and set(damaged.folders) == set(source.folders)

        plain = run_cli(tmp_path)  # trusts its state: says in sync, repairs nothing
        assert plain.exit_code == 0 and json.loads(plain.stdout)["mailboxes"][0]["flags_repaired"] == 0
        assert new.snapshot("alice@example.com").folders == damaged.folders

        dry = run_cli(tmp_path, "--verify", "--dry-run")
        assert dry.exit_code == 3 and json.loads(dry.stdout)["mailboxes"][0]["flags_repaired"] > 0
        assert new.snapshot("alice@example.com").folders == damaged.folders

        verified = run_cli(tmp_path, "--verify")
        assert verified.exit_code == 0, verified.output
        report = json.loads(verified.stdout)["mailboxes"][0]
        work = next(f for f in report["folders"] if f["folder"] == "Work")
        lacking = sum(1 for (digest, flags, _) in damaged.folders["Work"]
                      if flags != next(f for (d, f, _) in source.folders["Work"] if d == digest))
        assert report["flags_repaired"] == work["flags_repaired"] == lacking
        assert work["repairs"][0].startswith(f"{lacking} message(s) lacked flags on the new server (repaired): ")
        assert new.snapshot("alice@example.com").folders == source.folders

        again = run_cli(tmp_path, "--verify")
        assert again.exit_code == 0 and json.loads(again.stdout)["mailboxes"][0]["flags_repaired"] == 0

        # The index and the sync state both lost: copies are recognised, then their flags compared and repaired.
        assert lose_index(new, "Work").folders == damaged.folders
        shutil.rmtree(tmp_path / "state")
        stateless = run_cli(tmp_path, "--verify")
        assert stateless.exit_code == 0, stateless.output
        report = json.loads(stateless.stdout)["mailboxes"][0]
        assert report["copied"] == 0 and report["flag_updates"] + report["flags_repaired"] == lacking
        assert new.snapshot("alice@example.com").folders == source.folders


def lose_index(server: DovecotImap, folder: str):
    """Remove a folder's Dovecot index and rebuild it from the Maildir, as after an index loss; the mailbox then."""
    user = server.users[0].name
    for index in (server.maildir(user) / f".{folder}").glob("dovecot.index*"):
        index.unlink()
    server.doveadm("force-resync", "-u", user, folder)
    return server.snapshot(user)


def _keyword_uses(counts: Counter) -> Counter:
    return Counter(f for (_, flags, _), n in counts.items() for f in flags for _ in range(n) if f.startswith("Kw"))
