"""The mailstack command: roster check/hash, stack check, offline preview; exit codes."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from mailstack.cli import app
from tests.conftest import PROJECT, write_roster

runner = CliRunner()


@pytest.fixture(autouse=True)
def in_project(monkeypatch):
    monkeypatch.chdir(PROJECT)


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_roster_check_of_a_good_roster_exits_0_and_counts_mailboxes(tmp_path):
    result = invoke("roster", "check", str(write_roster(tmp_path / "r.csv", 7)), "--domain", "example.com")
    assert result.exit_code == 0
    assert "7 mailboxes, no problems; checked against domains example.com" in result.output


def test_roster_check_reports_every_problem_with_file_and_line_and_exits_1(tmp_path):
    roster = tmp_path / "bad.csv"
    roster.write_text("address,quota,password\nbad,2X,generate\nok@example.com,1G,generate\nok@example.com,1G,generate\n")
    result = invoke("roster", "check", str(roster), "-s", "dev")
    assert result.exit_code == 1
    assert f"roster {roster}: 3 problems" in result.output
    assert f"{roster}:2: address 'bad' has no @domain" in result.output
    assert f"{roster}:2: quota '2X': unknown unit 'X'" in result.output
    assert f"{roster}:4: address 'ok@example.com' is listed twice: first at {roster}:3" in result.output
    assert "Traceback" not in result.output


def test_roster_check_against_a_stack_refuses_other_domains(tmp_path):
    roster = write_roster(tmp_path / "r.csv", 2, domain="example.org")
    result = invoke("roster", "check", str(roster), "-s", "dev")
    assert result.exit_code == 1 and "example.org" in result.output and "example.com" in result.output


def test_roster_hash_turns_plaintext_into_hashes_without_printing_them(tmp_path):
    source = tmp_path / "sheet.csv"
    source.write_text("account,password,quota\ntaro@example.com,Plain-Secret-1,2G\n")
    dest = tmp_path / "roster.csv"
    result = invoke("roster", "hash", str(source), str(dest))
    assert result.exit_code == 0 and "1 passwords hashed" in result.output
    assert "Plain-Secret-1" not in result.output and "Plain-Secret-1" not in dest.read_text()
    assert "{SHA512-CRYPT}$6$" in dest.read_text()


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_check_validates_each_example_stack_and_its_roster(env):
    result = invoke("check", "-s", env)
    assert result.exit_code == 0, result.output
    assert f"stack {env}: settings valid" in result.output


def example_project(tmp_path):
    """A copy of the project's example stacks only, whatever other stack files this checkout holds."""
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    shutil.copytree(PROJECT / "stacks" / "mailboxes", project / "stacks" / "mailboxes")
    for env in ("dev", "staging", "prod"):
        shutil.copy(PROJECT / "stacks" / f"Pulumi.{env}.yaml", project / "stacks")
    shutil.copy(PROJECT / "Pulumi.yaml", project)
    return project


def test_check_of_an_unknown_stack_names_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(example_project(tmp_path))
    result = invoke("check", "-s", "qa")
    assert result.exit_code == 1 and "known stacks: dev, prod, staging" in result.output


def test_preview_evaluates_the_program_offline_and_reports_as_json():
    result = invoke("preview", "-s", "dev", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["facts"]["open_ports"] == [25, 80, 443, 465, 587, 993, 995]
    assert report["facts"]["user_data_bytes"] < 16384
    assert report["outputs"]["host_name"] == "mail-dev.example.com" and report["outputs"]["mailboxes"] == 4
    assert {"type": "ebs.Volume", "name": "mailstack-dev-mail",
            "detail": "10 GB gp3 encrypted=True protect=True"} in report["resources"]


def test_preview_of_a_stack_with_a_broken_roster_exits_1_with_the_problem(tmp_path, monkeypatch):
    project = example_project(tmp_path)
    (project / "stacks/mailboxes/dev.csv").write_text("address,password\nx@example.com,{MD5}abc\n")
    monkeypatch.chdir(project)
    result = invoke("preview", "-s", "dev")
    assert result.exit_code == 1
    assert "stacks/mailboxes/dev.csv:2: password uses the unsupported hash scheme {MD5}" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("text, seconds", [("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("6h", 21600.0),
                                           ("1.5h", 5400.0), ("1d", 86400.0), ("0", None), (None, None)])
def test_deadlines_are_durations(text, seconds):
    from mailstack.cli.common import duration

    assert duration(text, "--deadline") == seconds


def test_a_deadline_that_is_not_a_duration_is_a_usage_error(tmp_path):
    accounts = tmp_path / "a.csv"
    accounts.write_text("source_user,source_password,target_user,target_password\na,b,c@example.com,d\n")
    result = CliRunner().invoke(app, ["sync", "--source", "imap://127.0.0.9", "--target", "imap://127.0.0.9",
                                      "--accounts", str(accounts), "--deadline", "soon"])
    assert result.exit_code == 2 and "'soon' is not a duration" in result.output


def test_sync_is_listed_by_the_app_and_parses_its_own_options_the_same_from_either_door(tmp_path, monkeypatch):
    """`mailstack sync` goes straight to its argparse parser; the typer app lists it and hands it the same args."""
    import subprocess
    import sys

    listed = CliRunner().invoke(app, ["--help"])
    assert listed.exit_code == 0 and "│ sync " in listed.output and "Copy every mailbox" in listed.output
    through_app = CliRunner().invoke(app, ["sync", "--help"])
    assert through_app.exit_code == 0 and "usage: mailstack sync" in through_app.output and "--shard K/N" in through_app.output
    direct = subprocess.run([sys.executable, "-m", "mailstack.cli", "sync", "--help"], capture_output=True, text=True,
                            cwd=PROJECT, timeout=60)
    assert direct.returncode == 0 and direct.stdout == through_app.output
    unknown = CliRunner().invoke(app, ["sync", "--no-such-option"])
    assert unknown.exit_code == 2 and "unrecognized arguments: --no-such-option" in unknown.output
    for bad, says in ((["--jobs", "0"], "--jobs: 0 is not in the range 1 to 64"),
                      (["--max-message-size", "many"], "'many' is not a whole number")):
        result = CliRunner().invoke(app, ["sync", "--source", "imap://127.0.0.9", "--target", "imap://127.0.0.9", *bad])
        assert result.exit_code == 2 and says in result.output, result.output
    # --accounts from the environment, as before
    monkeypatch.setenv("MAILSTACK_SYNC_ACCOUNTS", str(tmp_path / "missing.csv"))
    missing = CliRunner().invoke(app, ["sync", "--source", "imap://127.0.0.9", "--target", "imap://127.0.0.9"])
    assert missing.exit_code == 1 and "missing.csv" in missing.output and "Traceback" not in missing.output
