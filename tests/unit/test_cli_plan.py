"""Offline ``mailstack plan`` and ``mailstack preview``: the same commit shows the same thing every time, and a
cutover previews without an address from AWS."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from typer.testing import CliRunner

from mailstack.cli import app
from tests.conftest import PROJECT

runner = CliRunner()


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the example stacks, with an evidence folder; the working directory."""
    project = tmp_path / "project"
    (project / "stacks" / "evidence").mkdir(parents=True)
    shutil.copytree(PROJECT / "stacks" / "mailboxes", project / "stacks" / "mailboxes")
    for env in ("dev", "staging", "prod"):
        shutil.copy(PROJECT / "stacks" / f"Pulumi.{env}.yaml", project / "stacks")
    shutil.copy(PROJECT / "Pulumi.yaml", project)
    monkeypatch.chdir(project)
    return project


def invoke(*args: str):
    return runner.invoke(app, list(args))


def verified(project, address: str, env: str = "dev", host: str = "mail-dev.example.com") -> None:
    now = datetime.now(timezone.utc)
    (project / "stacks" / "evidence" / f"{env}.json").write_text(json.dumps({
        "verification": {"at": (now - timedelta(hours=1)).isoformat(), "host_name": host, "host_ip": address,
                         "certificate_sha256": "ab" * 32, "checks": ["all"],
                         "mailboxes": ["taro.yamada@example.com", "hanako.sato@example.com", "postmaster@example.com",
                                       "ops@example.com"],
                         # dev's declared relay took verify's probe
                         "outbound": {"route": "relay", "summary": "relay relay.example.net:587",
                                      "probe": "outbound-probe@example.net", "action": "relayed",
                                      "remote_mta": "relay.example.net"}},
        "previous_mx_ttl": 3600, "lowered_ttl_seen_at": (now - timedelta(hours=2)).isoformat()}))


def set_phase(project, phase: str, env: str = "dev") -> None:
    path = project / "stacks" / f"Pulumi.{env}.yaml"
    data = yaml.safe_load(path.read_text())
    data["config"]["mailstack:phase"] = phase
    path.write_text(yaml.safe_dump(data))


def test_offline_cutover_plan_uses_the_address_recorded_in_the_evidence(project):
    verified(project, "198.51.100.44")
    result = invoke("plan", "-s", "dev", "--offline", "--phase", "cutover", "--format", "json")
    assert result.exit_code == 0, result.output
    planned = json.loads(result.stdout)
    host = next(c for c in planned["changes"] if (c["name"], c["type"]) == ("mail-dev.example.com", "A"))
    assert host["after"]["values"] == ["198.51.100.44"] and host["stand_in"] is None
    assert planned["gate_refusals"] == []
    assert ("outgoing mail: relay relay.example.net:587; verified: a probe to outbound-probe@example.net was "
            "relayed by relay.example.net") in planned["notes"]
    mx = next(c for c in planned["changes"] if c["type"] == "MX")
    assert mx["after"]["values"] == ["10 mail-dev.example.com."]


def test_offline_cutover_plan_without_evidence_uses_a_labelled_stand_in_and_never_fails(project):
    result = invoke("plan", "-s", "dev", "--offline", "--phase", "cutover", "--detailed-exitcode")
    assert result.exit_code == 2, result.output
    assert "stand-in: address 203.0.113.25 is a stand-in: no verified address in stacks/evidence/dev.json yet" \
        in result.stdout
    assert "stand-in: DKIM key is a stand-in derived from the stack name (offline)" in result.stdout
    assert "pulumi up would refuse the cutover phase: no verification evidence" in result.stdout


def test_two_offline_plans_of_one_commit_are_identical(project):
    first = invoke("plan", "-s", "prod", "--offline", "--format", "json").stdout
    assert first and first == invoke("plan", "-s", "prod", "--offline", "--format", "json").stdout


def test_plan_of_a_phase_that_is_not_one_is_a_usage_error(project):
    result = invoke("plan", "-s", "dev", "--offline", "--phase", "flip")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_plan_of_a_broken_evidence_file_exits_1_naming_it(project):
    (project / "stacks" / "evidence" / "dev.json").write_text("{not json")
    result = invoke("plan", "-s", "dev", "--offline")
    assert result.exit_code == 1 and "stacks/evidence/dev.json" in result.output and "Traceback" not in result.output


def preview_process(project, *args: str) -> subprocess.CompletedProcess:
    """``mailstack preview -s dev`` in a process of its own (stand-ins must not depend on a process's state)."""
    return subprocess.run([sys.executable, "-m", "mailstack.cli", "preview", "-s", "dev", *args], cwd=project,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(PROJECT), "PATH": "/usr/bin:/bin"})


def preview_json(project) -> dict:
    run = preview_process(project, "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_two_offline_previews_of_one_commit_show_the_same_records_and_bundle_version(project):
    first, second = preview_json(project), preview_json(project)
    assert first["outputs"]["bundle_version"] == second["outputs"]["bundle_version"]
    assert first["outputs"]["dkim_public_key"] == second["outputs"]["dkim_public_key"]
    assert first["outputs"]["dns_records"] == second["outputs"]["dns_records"]
    assert "DKIM key: a stand-in derived from the stack name (pulumi-tls makes the real one)" in first["stand_ins"]


def test_offline_preview_of_the_cutover_uses_the_verified_address(project):
    set_phase(project, "cutover")
    verified(project, "198.51.100.44")
    result = invoke("preview", "-s", "dev", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    records = {(r["name"], r["type"]): r["values"] for r in report["outputs"]["dns_records"]}
    assert records[("example.com", "MX")] == ["10 mail-dev.example.com."]
    assert records[("mail-dev.example.com", "A")] == ["198.51.100.44"]
    assert "host address 198.51.100.44: the verified address recorded in stacks/evidence/dev.json" in report["stand_ins"]


def test_offline_preview_of_a_cutover_without_evidence_names_the_gates_reasons_not_a_missing_address(project):
    set_phase(project, "cutover")
    run = preview_process(project)
    assert run.returncode == 1
    assert "cutover refused: no verification evidence" in run.stderr and "has no address yet" not in run.stderr
