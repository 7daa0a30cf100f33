"""`mailstack sync --shard K/N` against two real Dovecot servers: two shards, one after the other, copy all once."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.local.imapserver import DovecotImap, User
from mailstack.migration.evidence import evidence_path, load_evidence, mailbox_syncs
from mailstack.migration.lifecycle import sharded_sync_reasons
from tests.conftest import PROJECT, require_imap_servers
from tests.integration.test_sync import fill, same, write_accounts

pytestmark = pytest.mark.integration

OLD, NEW = "127.0.43.11", "127.0.43.12"
USERS = ("alice", "bob", "carol")  # of 2 shards: bob and carol fall in shard 1, alice in shard 2


@pytest.fixture
def servers():
    require_imap_servers()
    old = DovecotImap(OLD, [User(u, f"old-{u[0]}") for u in USERS], separator=".", prefix="INBOX.")
    new = DovecotImap(NEW, [User(f"{u}@example.com", f"new-{u[0]}") for u in USERS])
    with old, new:
        yield old, new


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the dev stack whose roster has the three mailboxes, as the working directory."""
    project = tmp_path / "project"
    shutil.copytree(PROJECT / "stacks", project / "stacks", ignore=shutil.ignore_patterns("evidence"))
    shutil.copy(PROJECT / "Pulumi.yaml", project)
    roster = project / "stacks/mailboxes/dev.csv"
    roster.write_text(roster.read_text() + "".join(f"{u}@example.com,{u},1G,imap,,generate\n" for u in USERS))
    monkeypatch.chdir(project)
    return project


def run_shard(tmp_path, accounts, shard: str):
    result = CliRunner().invoke(app, ["sync", "-s", "dev", "--source", f"imap://{OLD}", "--target", f"imap://{NEW}",
                                      "--state-dir", str(tmp_path / "state"), "--accounts", str(accounts),
                                      "--shard", shard, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_two_shards_one_after_the_other_copy_every_mailbox_once_and_each_reports_its_shard(servers, project,
                                                                                           tmp_path):
    old, new = servers
    for seed, user in enumerate(USERS):
        fill(old, user, 14, seed=seed + 1)
    accounts = write_accounts(tmp_path / "a.csv", [f"{u},old-{u[0]},{u}@example.com,new-{u[0]}" for u in USERS])
    evidence_file = evidence_path(project, "dev")

    first = run_shard(tmp_path, accounts, "1/2")
    assert first["shard"] == {"shard": "1/2", "index": 1, "count": 2, "accounts": 2, "skipped_other_shards": 1}
    assert sorted(m["source_user"] for m in first["mailboxes"]) == ["bob", "carol"]
    assert new.snapshot("alice@example.com").message_count() == 0  # the other shard's, untouched
    assert sharded_sync_reasons(load_evidence(evidence_file)) != []  # half a migration is not a complete sync

    second = run_shard(tmp_path, accounts, "2/2")
    assert second["shard"] == {"shard": "2/2", "index": 2, "count": 2, "accounts": 1, "skipped_other_shards": 2}
    assert [m["source_user"] for m in second["mailboxes"]] == ["alice"]

    copied = {m["source_user"]: m["copied"] for m in first["mailboxes"] + second["mailboxes"]}
    for user in USERS:
        same(old, new, user)  # every message once: the snapshots count each message's copies
        assert copied[user] == old.snapshot(user).message_count() == new.snapshot(f"{user}@example.com").message_count()
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["shard-1-of-2", "shard-2-of-2"]

    evidence = load_evidence(evidence_file)
    assert sharded_sync_reasons(evidence) == []
    assert sorted(mailbox_syncs(evidence)) == [f"{u}@example.com" for u in USERS]
    assert not evidence_file.exists()  # each shard wrote only its own file
    again = [run_shard(tmp_path, accounts, shard) for shard in ("1/2", "2/2")]
    assert [m["copied"] for run in again for m in run["mailboxes"]] == [0, 0, 0]
