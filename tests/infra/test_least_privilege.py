"""What the host may read and decrypt: its own bundle and secrets, with the stack's KMS key, and nothing else."""

from __future__ import annotations

import json

import pytest

from mailstack.infra.offline import Evaluation, evaluate
from tests.conftest import PROJECT, pulumi_config, stack_values

RELAY = {"host": "email-smtp.eu-west-1.amazonaws.com", "username": "AKIAEXAMPLE"}


@pytest.fixture
def evaluation(roster_file) -> Evaluation:
    config = pulumi_config(stack_values(roster_file, relay=RELAY))
    config["mailstack:relay_password"] = "relay-secret-value-123"
    return evaluate(config, project_dir=PROJECT, stack="test", secret_keys=["mailstack:relay_password"])



def policy_named(evaluation: Evaluation, name: str) -> dict:
    (found,) = [r for r in evaluation.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == name]
    return json.loads(found.inputs["policy"])


def actions(policy: dict) -> list[str]:
    return [a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]


def test_stack_key_rotates_and_lets_the_host_role_only_decrypt_through_s3_and_ssm(evaluation):
    key = evaluation.one("aws:kms/key:Key").inputs
    assert key["enableKeyRotation"] is True
    statements = {s["Sid"]: s for s in json.loads(key["policy"])["Statement"]}
    assert statements["AccountAdministersThroughIam"]["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    host = statements["HostDecryptsThroughS3AndSsm"]
    assert host["Principal"] == {"AWS": "arn:aws:iam::123456789012:role/mailstack-test-host"}
    assert host["Action"] == "kms:Decrypt"
    assert host["Condition"]["StringEquals"]["kms:ViaService"] == ["s3.eu-west-1.amazonaws.com",
                                                                   "ssm.eu-west-1.amazonaws.com"]
    assert set(statements) == {"AccountAdministersThroughIam", "HostDecryptsThroughS3AndSsm"}


def test_bundle_and_relay_password_are_encrypted_with_the_stack_key(evaluation):
    arn = evaluation.outputs["kms_key_arn"]
    assert arn.startswith("arn:aws:kms:eu-west-1:123456789012:key/")
    default = evaluation.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs["rules"][0]["applyServerSideEncryptionByDefault"]
    assert default == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": arn}
    bundle = evaluation.one("aws:s3/bucketObjectv2:BucketObjectv2").inputs
    assert bundle["serverSideEncryption"] == "aws:kms" and bundle["kmsKeyId"] == arn
    parameter = evaluation.one("aws:ssm/parameter:Parameter").inputs
    assert parameter["type"] == "SecureString" and parameter["keyId"] == arn


def test_host_may_decrypt_with_the_stack_key_only(evaluation):
    policy = policy_named(evaluation, "mailstack-test-host")
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    assert by_sid["DecryptWithStackKey"]["Resource"] == evaluation.outputs["kms_key_arn"]
    assert [a for a in actions(policy) if a.startswith("kms:")] == ["kms:Decrypt"]
    assert by_sid["ReadHostSecrets"]["Resource"] == [
        "arn:aws:ssm:eu-west-1:123456789012:parameter/mailstack-test/relay-password"]


def test_ssm_agent_may_register_and_serve_sessions_but_read_no_parameter_or_document(evaluation):
    policy = policy_named(evaluation, "mailstack-test-host-ssm-agent")
    granted = set(actions(policy))
    assert {"ssm:UpdateInstanceInformation", "ssmmessages:CreateControlChannel", "ssmmessages:OpenDataChannel",
            "ec2messages:GetMessages", "ec2messages:SendReply"} <= granted
    assert not [a for a in granted if a.startswith("ssm:Get") or a.startswith("ssm:Describe") or "*" in a]
    assert {a.split(":")[0] for a in granted} == {"ssm", "ssmmessages", "ec2messages"}
    attached = [r.inputs["policyArn"] for r in evaluation.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")]
    assert not [arn for arn in attached if "SSM" in arn]


def test_replaced_bundle_versions_expire_within_days(evaluation):
    (rule,) = evaluation.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    assert rule["status"] == "Enabled" and rule["filter"] == {"prefix": ""}
    assert rule["noncurrentVersionExpiration"]["noncurrentDays"] == 3
