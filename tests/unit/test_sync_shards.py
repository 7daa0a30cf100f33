"""`mailstack sync --shard K/N`: the partition of the accounts, each shard's evidence, and the gate over all shards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import unicodedata
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from mailstack.cli import app
from mailstack.migration.evidence import (
    Evidence, FinalSync, MailboxSync, ShardSync, load_evidence, mailbox_syncs, record, save_evidence, shard_path,
)
from mailstack.migration.lifecycle import decommission_gate, sharded_sync_reasons
from mailstack.problems import InputError
from mailstack.stack.settings import settings_from_values
from mailstack.sync.accounts import Account, Shard, parse_shard, partition, shard_of
from tests.conftest import PROJECT, stack_values

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
ROSTER = ("alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com")
# Known assignments: a change of digest or normalisation would move mailboxes between machines mid-migration.
KNOWN = {"alice": (2, 3, 4, 8), "bob": (1, 3, 3, 1), "carol": (1, 3, 3, 3), "dave": (2, 2, 4, 2),
         "erin": (2, 1, 4, 6), "ünïcode": (1, 3, 3, 5)}


# ------------------------------------------------------------------ the partition


@pytest.mark.parametrize("user, shards", sorted(KNOWN.items()))
def test_each_user_falls_in_a_fixed_shard_for_each_count(user, shards):
    assert tuple(shard_of(user, count) for count in (2, 3, 4, 10)) == shards


def test_the_shard_ignores_case_surrounding_spaces_and_the_unicode_normal_form():
    decomposed = unicodedata.normalize("NFD", "ünïcode")
    assert decomposed != "ünïcode"
    for count in (2, 3, 7):
        assert shard_of(" ALICE ", count) == shard_of("alice", count)
        assert shard_of(decomposed, count) == shard_of("ünïcode", count)


def test_another_process_with_another_hash_seed_puts_every_user_in_the_same_shard():
    code = ("from mailstack.sync.accounts import shard_of; "
            f"print([shard_of(u, n) for u in {sorted(KNOWN)!r} for n in (2, 3, 4, 10)])")
    seen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(PROJECT)}).stdout
    assert json.loads(seen) == [s for u in sorted(KNOWN) for s in KNOWN[u]]


users = st.lists(st.text(min_size=1, max_size=20).filter(str.strip), max_size=40,
                 unique_by=lambda u: unicodedata.normalize("NFC", u.strip()).lower())


@given(users, st.integers(min_value=1, max_value=12))
def test_the_shards_together_cover_every_account_exactly_once(names, count):
    accounts = [Account(name, "p", f"t{n}@example.com", "q") for n, name in enumerate(names)]
    covered = []
    for index in range(1, count + 1):
        mine, skipped = partition(accounts, Shard(index, count))
        assert skipped == len(accounts) - len(mine)
        assert all(shard_of(a.source_user, count) == index for a in mine)
        covered += mine
    assert sorted(covered, key=accounts.index) == accounts


@pytest.mark.parametrize("text, key", [("1/1", "1/1"), ("2/3", "2/3"), (" 3/3 ", "3/3"), ("02/05", "2/5")])
def test_a_shard_is_k_of_n(text, key):
    assert parse_shard(text).key == key


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "-1/2", "1", "1/2/3", "a/b", "1 / 2", "", "1.0/2", "+1/2"])
def test_anything_else_is_refused_saying_what_a_shard_is(text):
    with pytest.raises(ValueError, match="K"):
        parse_shard(text)


# ------------------------------------------------------------------ evidence of each shard, brought together


def shard_run(key: str, at, *mailboxes: str, differences: int = 0, in_sync: bool = True, skipped: int = 0) -> ShardSync:
    return ShardSync(shard=key, at=at, accounts=len(mailboxes), skipped=skipped, differences=differences,
                     synced={a: MailboxSync(at=at, differences=differences, in_sync=in_sync) for a in mailboxes})


def test_each_shard_records_in_its_own_file_and_reading_the_evidence_brings_them_together(tmp_path):
    path = tmp_path / "evidence" / "prod.json"
    record(path, backup_at=NOW)
    record(path, sync_shards={"1/2": shard_run("1/2", NOW, "bob@example.com", "carol@example.com", skipped=2)})
    record(path, sync_shards={"2/2": shard_run("2/2", NOW, "alice@example.com", "dave@example.com", skipped=2)})
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "prod.json", "prod.sync-shard-1-of-2.json", "prod.sync-shard-2-of-2.json"]
    main = json.loads(path.read_text())
    assert "sync_shards" not in main and main["synced"] == {} and "final_sync" not in main
    evidence = load_evidence(path)
    assert evidence.backup_at == NOW
    assert sorted(evidence.sync_shards) == ["1/2", "2/2"]
    assert sorted(mailbox_syncs(evidence)) == sorted(ROSTER)


def test_writing_the_evidence_never_copies_the_shards_into_it(tmp_path):
    path = tmp_path / "prod.json"
    record(path, sync_shards={"1/2": shard_run("1/2", NOW, "bob@example.com")})
    save_evidence(path, load_evidence(path).model_copy(update={"backup_at": NOW}))
    record(path, previous_mx_ttl=3600)
    main = json.loads(path.read_text())
    assert "sync_shards" not in main and main["synced"] == {}
    assert (main["backup_at"], main["previous_mx_ttl"]) == ("2026-11-23T12:00:00Z", 3600)
    assert list(load_evidence(path).sync_shards) == ["1/2"]


def test_a_shard_run_again_on_part_of_its_accounts_keeps_the_mailboxes_it_did_not_cover(tmp_path):
    path = tmp_path / "prod.json"
    record(path, sync_shards={"1/2": shard_run("1/2", NOW - timedelta(hours=1), "bob@example.com", "carol@example.com",
                                               differences=3)})
    record(path, sync_shards={"1/2": shard_run("1/2", NOW, "bob@example.com")})
    shard = load_evidence(path).sync_shards["1/2"]
    assert shard.at == NOW and shard.synced["bob@example.com"].differences == 0
    assert shard.synced["carol@example.com"].differences == 3


def test_the_latest_sync_of_a_mailbox_counts_whichever_run_made_it():
    early, late = NOW - timedelta(days=2), NOW - timedelta(days=1)
    evidence = Evidence(synced={"bob@example.com": MailboxSync(at=late, differences=0, in_sync=True),
                                "carol@example.com": MailboxSync(at=early, differences=5, in_sync=True)},
                        sync_shards={"1/2": shard_run("1/2", late, "carol@example.com"),
                                     "2/2": shard_run("2/2", early, "bob@example.com", differences=7)})
    latest = mailbox_syncs(evidence)
    assert latest["bob@example.com"].at == late and latest["bob@example.com"].differences == 0
    assert latest["carol@example.com"].at == late and latest["carol@example.com"].differences == 0


def test_a_shard_file_whose_name_and_content_disagree_is_a_problem_naming_the_file(tmp_path):
    path = tmp_path / "prod.json"
    record(path, sync_shards={"1/2": shard_run("1/2", NOW, "bob@example.com")})
    moved = shard_path(path, "2/3")
    shard_path(path, "1/2").rename(moved)
    (tmp_path / "prod.sync-shard-1-of-3.json").write_text("{not json")
    with pytest.raises(InputError) as caught:
        load_evidence(path)
    where = [p.where for p in caught.value.problems]
    assert where == [str(tmp_path / "prod.sync-shard-1-of-3.json"), str(moved)]
    assert "holds shard 1/2, but its name says 2/3" in str(caught.value.problems[1])


def test_a_shard_file_of_a_shard_past_its_count_is_a_problem(tmp_path):
    path = tmp_path / "prod.json"
    record(path, sync_shards={"1/2": shard_run("1/2", NOW, "bob@example.com")})
    bad = tmp_path / "prod.sync-shard-3-of-2.json"
    bad.write_text(shard_path(path, "1/2").read_text().replace('"1/2"', '"3/2"'))
    with pytest.raises(InputError) as caught:
        load_evidence(path)
    assert [p.where for p in caught.value.problems] == [str(bad)]
    assert "K must be between 1 and N" in str(caught.value.problems[0])


def test_files_of_other_stacks_and_other_names_are_not_shards(tmp_path):
    path = tmp_path / "prod.json"
    record(path, sync_shards={"1/2": shard_run("1/2", NOW, "bob@example.com")})
    shutil.copy(shard_path(path, "1/2"), tmp_path / "dev.sync-shard-2-of-2.json")
    shutil.copy(shard_path(path, "1/2"), tmp_path / "prod.sync-shard-0-of-2.json")
    assert list(load_evidence(path).sync_shards) == ["1/2"]
    assert load_evidence(tmp_path / "staging.json") is None


# ------------------------------------------------------------------ the decommission gate over the shards


def ready(**changes) -> Evidence:
    """Everything the decommission gate wants but the final sync."""
    return Evidence(new_mx_first_seen_at=NOW - timedelta(days=15), old_server_last_mail_at=NOW - timedelta(days=4),
                    old_server_checked={}, backup_at=NOW - timedelta(days=20)).model_copy(update=changes)


def gate(evidence: Evidence):
    from mailstack.migration.evidence import OldServerCheck

    evidence = evidence.model_copy(update={"old_server_checked": {
        a: OldServerCheck(at=NOW - timedelta(hours=2)) for a in ROSTER}})
    settings = settings_from_values(stack_values("r.csv"), source="t")
    return decommission_gate(settings, evidence, NOW, roster=ROSTER)


DAY = NOW - timedelta(days=1)
SHARD_1 = ("bob@example.com", "carol@example.com")  # shard 1 of 2 of the source users bob and carol
SHARD_2 = ("alice@example.com", "dave@example.com")


def test_every_shard_reported_is_a_final_sync_of_the_whole_roster():
    decision = gate(ready(sync_shards={"1/2": shard_run("1/2", DAY, *SHARD_1),
                                       "2/2": shard_run("2/2", DAY + timedelta(hours=3), *SHARD_2)}))
    assert decision.allowed, decision.reasons


def test_a_sharded_sync_with_a_shard_missing_is_refused_naming_the_shard_and_its_mailboxes():
    decision = gate(ready(sync_shards={"1/2": shard_run("1/2", DAY, *SHARD_1)}))
    assert not decision.allowed
    assert any("sharded over 2 machines is incomplete: shard(s) 2/2 have not reported" in r
               and "--shard K/2" in r for r in decision.reasons), decision.reasons
    assert any("no sync covered 2 roster mailbox(es): alice@example.com, dave@example.com" in r
               for r in decision.reasons), decision.reasons


def test_a_shard_missing_is_refused_even_when_older_syncs_cover_its_mailboxes():
    decision = gate(ready(synced={a: MailboxSync(at=DAY, differences=0, in_sync=True) for a in ROSTER},
                          final_sync=FinalSync(at=DAY, differences=0),
                          sync_shards={"1/3": shard_run("1/3", DAY + timedelta(hours=1), "bob@example.com")}))
    assert [r for r in decision.reasons if "shard(s) 2/3, 3/3 have not reported" in r], decision.reasons


def test_shards_of_two_counts_never_add_up_to_a_complete_sync():
    # 1/2 and 2/3 + 3/3: every mailbox happens to be covered, but neither partition is whole.
    shards = {"1/2": shard_run("1/2", DAY, *SHARD_1),
              "2/3": shard_run("2/3", DAY + timedelta(hours=1), "dave@example.com"),
              "3/3": shard_run("3/3", DAY + timedelta(hours=2), "alice@example.com")}
    decision = gate(ready(sync_shards=shards))
    reason = next(r for r in decision.reasons if "incomplete" in r)
    assert "sharded over 3 machines is incomplete: shard(s) 1/3 have not reported" in reason
    assert "shards of another count (1/2) do not complete it" in reason
    later_two = {**shards, "1/2": shard_run("1/2", DAY + timedelta(hours=5), *SHARD_1)}
    reason = next(r for r in gate(ready(sync_shards=later_two)).reasons if "incomplete" in r)
    assert "over 2 machines is incomplete: shard(s) 2/2 have not reported" in reason and "(2/3, 3/3)" in reason


def test_a_complete_layout_reported_last_counts_whatever_older_shards_of_another_count_remain():
    decision = gate(ready(sync_shards={"1/3": shard_run("1/3", DAY - timedelta(hours=5), "bob@example.com"),
                                       "1/2": shard_run("1/2", DAY, *SHARD_1),
                                       "2/2": shard_run("2/2", DAY, *SHARD_2)}))
    assert decision.allowed, decision.reasons


def test_an_unsharded_sync_after_the_shards_replaces_them():
    evidence = ready(synced={a: MailboxSync(at=DAY, differences=0, in_sync=True) for a in ROSTER},
                     final_sync=FinalSync(at=DAY, differences=0),
                     sync_shards={"1/2": shard_run("1/2", DAY - timedelta(hours=1), *SHARD_1)})
    assert sharded_sync_reasons(evidence) == []
    assert gate(evidence).allowed


def test_a_roster_mailbox_in_no_shard_is_not_synced():
    decision = gate(ready(sync_shards={"1/2": shard_run("1/2", DAY, *SHARD_1),
                                       "2/2": shard_run("2/2", DAY, "alice@example.com")}))
    assert decision.reasons == (
        "no sync covered 1 roster mailbox(es): dave@example.com: run mailstack sync -s ENV --accounts FILE with a row "
        "for each, or list them in mailstack:exempt_mailboxes with a reason",)


def test_a_shard_that_did_not_end_in_sync_blocks_its_mailboxes():
    decision = gate(ready(sync_shards={"1/2": shard_run("1/2", DAY, *SHARD_1),
                                       "2/2": shard_run("2/2", DAY, *SHARD_2, in_sync=False)}))
    assert any("alice@example.com (not in sync)" in r for r in decision.reasons), decision.reasons


def test_many_missing_shards_are_named_a_few_and_counted():
    reasons = sharded_sync_reasons(Evidence(sync_shards={"3/12": shard_run("3/12", DAY)}))
    assert "shard(s) 1/12, 2/12, 4/12, 5/12, 6/12 and 6 more have not reported" in reasons[0]


# ------------------------------------------------------------------ the command


def sync_cli(tmp_path, *args):
    accounts = tmp_path / "a.csv"
    accounts.write_text("source_user,source_password,target_user,target_password\n"
                        "alice,pa,alice@example.com,na\ndave,pd,dave@example.com,nd\n")
    # 127.0.0.9 serves nothing: a run that had an account of its shard would fail to connect.
    return CliRunner().invoke(app, ["sync", "--source", "imap://127.0.0.9", "--target", "imap://127.0.0.9",
                                    "--state-dir", str(tmp_path / "state"), "--accounts", str(accounts), *args])


@pytest.mark.parametrize("shard", ["0/2", "3/2", "two", "1/0"])
def test_a_bad_shard_is_one_usage_error_before_anything_runs(tmp_path, shard):
    result = sync_cli(tmp_path, "--shard", shard)
    assert result.exit_code == 2
    assert "Invalid value for --shard" in result.output
    assert f"'{shard}'" in result.output and ("is not K/N" in result.output or "between 1 and N" in result.output)
    assert "Traceback" not in result.output and not (tmp_path / "state").exists()


def test_a_shard_with_a_reverse_sync_is_a_usage_error(tmp_path):
    result = sync_cli(tmp_path, "--shard", "1/2", "--reverse")
    assert result.exit_code == 2 and "run it on one machine" in result.output


def test_the_report_says_which_shard_it_covered_and_what_it_left_to_the_others(tmp_path):
    result = sync_cli(tmp_path, "--shard", "1/2", "--json")  # alice and dave are both in shard 2 of 2
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["shard"] == {"shard": "1/2", "index": 1, "count": 2, "accounts": 0, "skipped_other_shards": 2}
    assert report["mailboxes"] == [] and report["in_sync"] is True
    console = sync_cli(tmp_path, "--shard", "1/2")
    assert "shard 1/2: 0 account(s) in this shard, 2 left to the other shards" in console.output


def test_an_unsharded_report_says_no_shard():
    from mailstack.sync.report import report_json

    assert report_json([], [], dry_run=False)["shard"] is None


def test_a_shard_of_a_stack_records_its_own_evidence_file(tmp_path, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(PROJECT / "stacks", project / "stacks", ignore=shutil.ignore_patterns("evidence"))
    shutil.copy(PROJECT / "Pulumi.yaml", project)
    (project / "stacks/mailboxes/dev.csv").write_text((PROJECT / "stacks/mailboxes/dev.csv").read_text()
                                                      + "alice@example.com,A,1G,imap,,generate\n"
                                                      + "dave@example.com,D,1G,imap,,generate\n")
    monkeypatch.chdir(project)
    result = sync_cli(tmp_path, "-s", "dev", "--shard", "1/2", "--pop3-uidls", "none")
    assert result.exit_code == 0, result.output
    evidence_dir = project / "stacks/evidence"
    assert [p.name for p in evidence_dir.iterdir()] == ["dev.sync-shard-1-of-2.json"]
    assert f"recorded in {evidence_dir / 'dev.sync-shard-1-of-2.json'}" in result.output
    shard = load_evidence(evidence_dir / "dev.json").sync_shards["1/2"]
    assert (shard.accounts, shard.skipped, shard.synced) == (0, 2, {})
