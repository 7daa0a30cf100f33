"""`mailstack sync` starts light: the run an operator repeats during the overlap loads no cloud or spreadsheet code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import PROJECT

# What the sync command never needs without -s: the Pulumi program, AWS, spreadsheets, templates, the stack's YAML,
# the verify checks.
NOT_LOADED = ("pulumi", "pulumi_aws", "openpyxl", "boto3", "botocore", "jinja2", "yaml", "mailstack.infra",
              "mailstack.checks", "mailstack.host")

RUN = """
import json, sys
sys.argv = ["mailstack", *sys.argv[2:]]
from mailstack.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
with open({out!r}, "w") as f:
    json.dump({{"code": code, "modules": sorted(sys.modules)}}, f)
"""


def loaded(tmp_path, *args: str) -> tuple[int, set[str]]:
    """The exit code of ``mailstack ARGS`` run in a fresh interpreter, and the modules it had loaded at the end."""
    out = tmp_path / "modules.json"
    subprocess.run([sys.executable, "-c", RUN.format(out=str(out)), "--", *args], cwd=tmp_path, capture_output=True,
                   env={"PYTHONPATH": str(PROJECT), "PATH": "/usr/bin:/bin"}, timeout=60)
    found = json.loads(out.read_text())
    return found["code"], set(found["modules"])


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in NOT_LOADED or m.startswith(NOT_LOADED))


def test_a_sync_run_loads_no_pulumi_aws_or_spreadsheet_code(tmp_path):
    accounts = tmp_path / "accounts.csv"
    accounts.write_text("source_user,source_password,target_user,target_password\nann,pw,ann@example.com,pw2\n")
    # Nothing listens on port 1: the mailbox fails at once, after the whole sync path was loaded and run.
    code, modules = loaded(tmp_path, "sync", "--source", "imap://127.0.42.250:1", "--target", "imap://127.0.42.251:1",
                           "--accounts", str(accounts), "--state-dir", str(tmp_path / "state"), "--json")
    assert code == 3
    assert {"mailstack.sync.engine", "mailstack.sync.state", "mailstack.sync.report"} <= modules
    assert heavy(modules) == []
    assert not {"rich.table", "rich.progress", "mailstack.migration.evidence"} & modules  # nothing it does not print
    assert not {"zipfile", "tempfile"} & modules  # a CSV roster is read, no file written through a temporary one
    # Its own parser: none of the other commands' framework (typer, click, rich) nor pydantic is even loaded.
    assert framework(modules) == []


def framework(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in ("typer", "click", "rich", "pydantic", "pydantic_core"))


def test_the_sync_help_loads_no_cli_framework(tmp_path):
    code, modules = loaded(tmp_path, "sync", "--help")
    assert code == 0 and framework(modules) == []


@pytest.mark.parametrize("args", [("sync", "--help"), ("--help",)])
def test_the_help_loads_no_pulumi_aws_or_spreadsheet_code(tmp_path, args):
    code, modules = loaded(tmp_path, *args)
    assert code == 0
    assert "mailstack.cli.sync" in modules
    assert heavy(modules) == []
