"""The host agent pulls a bundle encrypted with the stack's KMS key (SSE-KMS, as the program stores it).

moto's S3 and KMS over real HTTP on 127.0.44.1. moto does not enforce key
policies: that the host role may decrypt is proven by the policy tests under
mocks (tests/infra/test_least_privilege.py); this proves the agent's pull
needs no change for an SSE-KMS object.
"""

from __future__ import annotations

import json

import boto3
import pytest

from mailstack.host import files as hostfiles
from mailstack.stack.roster import load_roster
from mailstack.stack.settings import settings_from_values
from tests.conftest import moto_server, stack_values, write_roster
from tests.integration.test_bundle_pull import pull

pytestmark = pytest.mark.integration
ADDRESS = "127.0.44.1"  # inside 127.0.0.0/8, which lo carries: nothing to add


@pytest.fixture
def aws_env(monkeypatch):
    with moto_server(ADDRESS) as endpoint:
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "eu-west-1", "AWS_EC2_METADATA_DISABLED": "true"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield env


def test_agent_applies_a_bundle_stored_with_sse_kms(tmp_path, aws_env):
    key_arn = boto3.client("kms", region_name="eu-west-1").create_key(Description="stack key")["KeyMetadata"]["Arn"]
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="bundle-kms", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_bucket_encryption(Bucket="bundle-kms", ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn},
        "BucketKeyEnabled": True}]})
    settings = settings_from_values(stack_values(tmp_path / "r.csv"), source="t")
    roster = load_roster(write_roster(tmp_path / "r.csv", 3), domains=settings.domains)
    document = hostfiles.bundle_document(hostfiles.render_host_files(
        settings, roster, password_seed="s" * 48, mail_volume_id="vol-0123456789abcdef0"))
    s3.put_object(Bucket="bundle-kms", Key="bundle.json", Body=document.encode(),
                  ServerSideEncryption="aws:kms", SSEKMSKeyId=key_arn, BucketKeyEnabled=True)
    stored = s3.head_object(Bucket="bundle-kms", Key="bundle.json")
    assert stored["ServerSideEncryption"] == "aws:kms" and stored["SSEKMSKeyId"] == key_arn

    root = tmp_path / "root"
    (root / "etc/mailstack").mkdir(parents=True)
    (root / "etc/mailstack/bootstrap.json").write_text(
        json.dumps({"bucket": "bundle-kms", "key": "bundle.json", "region": "eu-west-1"}))
    result = pull(root, aws_env)
    assert result.returncode == 0, result.stderr
    assert f"bundle {hostfiles.bundle_version(document)} applied" in result.stdout
    assert len((root / "etc/dovecot/users").read_text().splitlines()) == 3
