"""The host's mailstack-agent applies the config bundle from S3 (moto's server, real HTTP on loopback)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from mailstack.host import files as hostfiles
from mailstack.stack.roster import load_roster
from mailstack.stack.settings import settings_from_values
from tests.conftest import moto_server, stack_values, write_roster

pytestmark = pytest.mark.integration
PULL = hostfiles.TEMPLATES / "host" / "mailstack-agent"


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_server("127.0.0.1") as endpoint:
        yield endpoint


@pytest.fixture
def aws_env(s3_endpoint, monkeypatch):
    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "eu-west-1", "AWS_EC2_METADATA_DISABLED": "true"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def publish(tmp_path: Path, count: int, bucket: str) -> str:
    settings = settings_from_values(stack_values(tmp_path / "r.csv"), source="t")
    roster = load_roster(write_roster(tmp_path / f"r{count}.csv", count), domains=settings.domains)
    files = hostfiles.render_host_files(settings, roster, password_seed="s" * 48, mail_volume_id="vol-0123456789abcdef0")
    document = hostfiles.bundle_document(files)
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.put_object(Bucket=bucket, Key="bundle.json", Body=document.encode())
    return hostfiles.bundle_version(document)


def pull(root: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PULL), "--root", str(root), "--no-services"],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=60)


@pytest.fixture
def host_root(tmp_path, aws_env):
    bucket = f"bundle-{tmp_path.name.lower().replace('_', '-')[:40]}"
    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    root = tmp_path / "root"
    (root / "etc/mailstack").mkdir(parents=True)
    (root / "etc/mailstack/bootstrap.json").write_text(
        json.dumps({"bucket": bucket, "key": "bundle.json", "region": "eu-west-1"}))
    return root, bucket


def test_pull_writes_every_bundle_file_with_its_mode(tmp_path, aws_env, host_root):
    root, bucket = host_root
    version = publish(tmp_path, 3, bucket)
    result = pull(root, aws_env)
    assert result.returncode == 0, result.stderr
    assert f"bundle {version} applied" in result.stdout
    users = root / "etc/dovecot/users"
    assert len(users.read_text().splitlines()) == 3
    assert stat.S_IMODE(users.stat().st_mode) == 0o640
    assert (root / "var/lib/mailstack/applied").read_text().strip() == version


def test_pull_of_an_unchanged_bundle_changes_nothing(tmp_path, aws_env, host_root):
    root, bucket = host_root
    version = publish(tmp_path, 3, bucket)
    assert pull(root, aws_env).returncode == 0
    before = (root / "etc/dovecot/users").stat().st_mtime_ns
    again = pull(root, aws_env)
    assert again.returncode == 0 and f"bundle {version} already applied" in again.stdout
    assert (root / "etc/dovecot/users").stat().st_mtime_ns == before


def test_roster_change_reaches_the_host_through_a_new_bundle(tmp_path, aws_env, host_root):
    root, bucket = host_root
    publish(tmp_path, 3, bucket)
    assert pull(root, aws_env).returncode == 0
    publish(tmp_path, 4, bucket)
    result = pull(root, aws_env)
    assert result.returncode == 0 and "files changed" in result.stdout
    assert "user3@example.com" in (root / "etc/dovecot/users").read_text()


def test_pull_refuses_a_bundle_format_it_does_not_know(tmp_path, aws_env, host_root):
    root, bucket = host_root
    boto3.client("s3", region_name="eu-west-1").put_object(
        Bucket=bucket, Key="bundle.json", Body=json.dumps({"format": 99, "files": {}}).encode())
    result = pull(root, aws_env)
    assert result.returncode != 0 and "bundle format 99 is not supported" in result.stderr
    assert not (root / "var/lib/mailstack/applied").exists()
