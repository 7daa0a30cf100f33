"""The GitHub workflows: valid against the GitHub workflow schema, and doing what the README says they do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT

WORKFLOWS = PROJECT / ".github" / "workflows"


def load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def uses(job: dict) -> list[str]:
    return [s["uses"].split("@")[0] for s in steps(job) if "uses" in s]


def check_jsonschema() -> str:
    found = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")
    if not found:
        pytest.fail("check-jsonschema is not installed: it is in pyproject's test extras (scripts/bootstrap)")
    return found


def test_every_workflow_is_valid_against_the_github_workflow_schema():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert len(files) == 3
    run = subprocess.run([check_jsonschema(), "--builtin-schema", "vendor.github-workflows", *map(str, files)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: pull_request\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: 3\n")
    run = subprocess.run([check_jsonschema(), "--builtin-schema", "vendor.github-workflows", str(broken)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1


def test_pull_requests_touching_stacks_or_code_run_check_plan_and_pulumi_preview_and_one_comment():
    flow = load("pr-preview.yml")
    assert {"stacks/**", "mailstack/**", "templates/**", "__main__.py", "Pulumi.yaml"} <= set(flow["on"]["pull_request"]["paths"])
    preview = flow["jobs"]["preview"]
    assert preview["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.stacks) }}"
    runs = "\n".join(s.get("run", "") for s in steps(preview))
    assert 'mailstack check -s "$STACK"' in runs
    assert 'mailstack plan -s "$STACK" --format markdown --detailed-exitcode' in runs
    pulumi = next(s for s in steps(preview) if s.get("uses", "").startswith("pulumi/actions@"))
    assert pulumi["with"]["command"] == "preview" and pulumi["with"]["diff"] is True
    comment = flow["jobs"]["comment"]
    sticky = next(s for s in steps(comment) if s.get("uses", "").startswith("marocchino/sticky-pull-request-comment@"))
    assert sticky["with"]["header"] == "mailstack-preview"
    assert comment["permissions"] == {"pull-requests": "write"}


def test_merge_to_main_runs_pulumi_up_for_dev_then_staging_and_prod_behind_their_environments():
    deploy = load("deploy.yml")
    assert deploy["on"]["push"]["branches"] == ["main"]
    jobs = deploy["jobs"]
    assert [jobs[j]["with"]["stack"] for j in ("dev", "staging", "prod")] == ["dev", "staging", "prod"]
    assert jobs["staging"]["needs"] == "dev" and jobs["prod"]["needs"] == "staging"
    up = load("pulumi-up.yml")["jobs"]["up"]
    assert up["environment"] == "${{ inputs.stack }}"
    pulumi = next(s for s in steps(up) if s.get("uses", "").startswith("pulumi/actions@"))
    assert pulumi["with"]["command"] == "up"


def test_aws_is_reached_by_oidc_role_assumption_never_by_stored_keys():
    for name, job in [("pr-preview.yml", load("pr-preview.yml")["jobs"]["preview"]),
                      ("pulumi-up.yml", load("pulumi-up.yml")["jobs"]["up"])]:
        assert job["permissions"]["id-token"] == "write", name
        aws = next(s for s in steps(job) if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@"))
        assert set(aws["with"]) == {"role-to-assume", "role-session-name", "aws-region"}, name
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        assert "aws-access-key-id" not in text and "AWS_SECRET_ACCESS_KEY" not in text, path.name
