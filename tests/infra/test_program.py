"""The Pulumi program under Pulumi's mock engine: what it declares, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pytest

from mailstack.infra.offline import Evaluation, evaluate, is_secret, reveal
from mailstack.stack.passwords import initial_password
from tests.conftest import PROJECT, pulumi_config, stack_values, write_roster

MAIL_PORTS = {25, 465, 587, 993, 995}
WEB_PORTS = {80, 443}


def run(roster: Path, *, secret_keys=None, extra: dict | None = None, **overrides) -> Evaluation:
    config = pulumi_config(stack_values(roster, **overrides))
    config.update(extra or {})
    return evaluate(config, project_dir=PROJECT, stack="test", secret_keys=secret_keys)


@pytest.fixture
def evaluation(roster_file) -> Evaluation:
    return run(roster_file)


def walk_strings(value, secret=False):
    """Every string in a recorded input, with whether it sits inside a secret."""
    if is_secret(value):
        yield from walk_strings(value["value"], True)
    elif isinstance(value, dict):
        for item in value.values():
            yield from walk_strings(item, secret)
    elif isinstance(value, list):
        for item in value:
            yield from walk_strings(item, secret)
    elif isinstance(value, str):
        yield value, secret


# --------------------------------------------------------------- firewall


def test_security_group_opens_exactly_the_mail_and_web_ports(evaluation):
    group = evaluation.one("aws:ec2/securityGroup:SecurityGroup")
    ports = {(rule["fromPort"], rule["toPort"], rule["protocol"]) for rule in group.inputs["ingress"]}
    assert ports == {(p, p, "tcp") for p in MAIL_PORTS | WEB_PORTS}


def test_security_group_without_web_opens_only_mail_ports(roster_file):
    group = run(roster_file, web=False).one("aws:ec2/securityGroup:SecurityGroup")
    assert {rule["fromPort"] for rule in group.inputs["ingress"]} == MAIL_PORTS


def test_nothing_but_those_ports_is_open_to_the_internet(evaluation):
    """No SSH, no port range: every rule from 0.0.0.0/0 or ::/0 is one allowed port."""
    allowed = MAIL_PORTS | WEB_PORTS
    groups = evaluation.of_type("aws:ec2/securityGroup:SecurityGroup")
    rule_resources = [r for r in evaluation.resources if "IngressRule" in r.type or "securityGroupRule" in r.type]
    assert rule_resources == []
    for group in groups:
        for rule in group.inputs["ingress"]:
            assert rule["fromPort"] == rule["toPort"] and rule["fromPort"] in allowed
            assert rule["cidrBlocks"] == ["0.0.0.0/0"] and rule["ipv6CidrBlocks"] == ["::/0"]
    assert 22 not in {rule["fromPort"] for g in groups for rule in g.inputs["ingress"]}


# ------------------------------------------------------------------- host


def test_instance_requires_imdsv2_and_encrypts_its_root_volume(evaluation):
    instance = evaluation.one("aws:ec2/instance:Instance").inputs
    assert instance["metadataOptions"]["httpTokens"] == "required"
    assert instance["metadataOptions"]["httpPutResponseHopLimit"] == 1
    assert instance["rootBlockDevice"]["encrypted"] is True
    assert "keyName" not in instance


def test_instance_runs_debian_12_of_the_instance_architecture(roster_file):
    evaluation = run(roster_file, host={"name": "mail.example.com", "instance_type": "t4g.small"})
    (token, args), = [c for c in evaluation.calls if c[0] == "aws:ec2/getAmi:getAmi"]
    filters = {f["name"]: f["values"] for f in args["filters"]}
    assert args["owners"] == ["136693071363"]
    assert filters["name"] == ["debian-12-arm64-*"] and filters["architecture"] == ["arm64"]


def test_newer_debian_image_does_not_replace_the_host_unless_pinned(roster_file):
    floating = run(roster_file).one("aws:ec2/instance:Instance")
    assert floating.options["ignore_changes"] == ["userData", "ami"]
    pinned = run(roster_file, host={"name": "mail.example.com", "ami": "ami-0123456789abcdef0"})
    instance = pinned.one("aws:ec2/instance:Instance")
    assert instance.inputs["ami"] == "ami-0123456789abcdef0" and instance.options["ignore_changes"] == ["userData"]


def test_user_data_edits_never_stop_the_running_host(roster_file):
    """The user data only bootstraps the agent; the bundle updates it, so Pulumi ignores later edits."""
    instance = run(roster_file).one("aws:ec2/instance:Instance")
    assert "userData" in instance.options["ignore_changes"]
    assert instance.inputs["userDataReplaceOnChange"] is False


def role_policy(evaluation: Evaluation, name: str) -> dict:
    (found,) = [r for r in evaluation.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == name]
    return json.loads(found.inputs["policy"])


def test_host_role_may_read_only_its_bundle_and_its_acme_record(evaluation):
    policy = role_policy(evaluation, "mailstack-test-host")
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    bundle = evaluation.one("aws:s3/bucketObjectv2:BucketObjectv2").inputs
    assert by_sid["ReadConfigBundle"]["Resource"] == f"arn:aws:s3:::{bundle['bucket']}/bundle.json"
    assert set(by_sid["ReadConfigBundle"]["Action"]) == {"s3:GetObject", "s3:GetObjectVersion"}
    change = by_sid["AcmeChallengeOnly"]
    assert change["Condition"]["ForAllValues:StringEquals"] == {
        "route53:ChangeResourceRecordSetsNormalizedRecordNames": [
            "_acme-challenge.mail.example.com", "_acme-challenge.mta-sts.example.com",
            "_acme-challenge.autoconfig.example.com", "_acme-challenge.autodiscover.example.com"],
        "route53:ChangeResourceRecordSetsRecordTypes": ["TXT"],
    }
    actions = [a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert not any(a.endswith("*") for a in actions)
    attached = {r.inputs["policyArn"] for r in evaluation.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")}
    # The only managed policy is the snapshot role's (DLM); the host role has none.
    assert attached == {"arn:aws:iam::aws:policy/service-role/AWSDataLifecycleManagerServiceRole"}


# ---------------------------------------------------------------- storage


def test_mail_volume_is_separate_encrypted_and_protected(evaluation):
    volume = evaluation.one("aws:ebs/volume:Volume")
    assert volume.inputs["encrypted"] is True
    assert volume.inputs["size"] == 20 and volume.inputs["type"] == "gp3"
    assert volume.options["protect"] is True
    attachment = evaluation.one("aws:ec2/volumeAttachment:VolumeAttachment").inputs
    assert attachment["volumeId"].startswith("vol-") and attachment["instanceId"].startswith("i-")


def test_mail_volume_is_in_the_availability_zone_of_the_host_subnet(roster_file):
    evaluation = run(roster_file, host={"name": "mail.example.com", "availability_zone": "eu-west-1c"})
    assert evaluation.one("aws:ebs/volume:Volume").inputs["availabilityZone"] == "eu-west-1c"
    subnet_calls = [args for token, args in evaluation.calls if token == "aws:ec2/getSubnet:getSubnet"]
    assert subnet_calls[0]["availabilityZone"] == "eu-west-1c" and subnet_calls[0]["defaultForAz"] is True


def test_snapshot_policy_targets_the_mail_volume_daily(evaluation):
    volume = evaluation.one("aws:ebs/volume:Volume").inputs
    policy = evaluation.one("aws:dlm/lifecyclePolicy:LifecyclePolicy").inputs
    details = policy["policyDetails"]
    assert details["resourceTypes"] == ["VOLUME"]
    assert details["targetTags"].items() <= volume["tags"].items()
    schedule = details["schedules"][0]
    assert schedule["createRule"] == {"interval": 24, "intervalUnit": "HOURS", "times": "03:00"}
    assert schedule["retainRule"]["count"] == 14
    assert policy["state"] == "ENABLED"


# ------------------------------------------------------------ IP, PTR, DNS


def test_elastic_ip_gets_a_ptr_to_the_host_name_after_its_a_record(evaluation):
    ptr = evaluation.one("aws:ec2/eipDomainName:EipDomainName")
    eip = evaluation.one("aws:ec2/eip:Eip")
    (record,) = [r for r in evaluation.of_type("aws:route53/record:Record") if r.name == "mail.example.com-A"]
    assert ptr.inputs["domainName"] == "mail.example.com"
    assert ptr.inputs["allocationId"].startswith("eipalloc-") and eip.inputs["domain"] == "vpc"
    assert record.inputs["name"] == "mail.example.com" and record.inputs["type"] == "A"
    assert record.inputs["records"] == ["203.0.113.25"]
    assert any(urn.endswith("::mail.example.com-A") for urn in ptr.options["depends_on"])


# ----------------------------------------------------------------- bundle


def test_bundle_bucket_is_private_encrypted_and_versioned(evaluation):
    block = evaluation.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    encryption = evaluation.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert encryption.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    versioning = evaluation.one("aws:s3/bucketVersioning:BucketVersioning").inputs
    assert versioning["versioningConfiguration"]["status"] == "Enabled"
    policy = json.loads(evaluation.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_bundle_carries_every_mailbox_with_its_quota(tmp_path):
    evaluation = run(write_roster(tmp_path / "r.csv", 12))
    files = json.loads(reveal(evaluation.one("aws:s3/bucketObjectv2:BucketObjectv2").inputs["content"]))["files"]
    users = files["/etc/dovecot/users"]["content"].splitlines()
    assert len(users) == 12
    assert users[1].startswith("user1@example.com:{SHA512-CRYPT}$6$") and users[1].endswith("userdb_quota_rule=*:storage=2G")
    assert users[0].startswith("user0@example.com:{SSHA512}")
    assert files["/etc/dovecot/users"]["mode"] == "0640"
    assert "alias10@example.com user10@example.com" in files["/etc/postfix/virtual_aliases"]["content"]


def test_roster_change_updates_the_bundle_and_not_the_instance(tmp_path):
    before = run(write_roster(tmp_path / "a.csv", 5))
    after = run(write_roster(tmp_path / "b.csv", 6))
    assert before.one("aws:ec2/instance:Instance").inputs == after.one("aws:ec2/instance:Instance").inputs
    content = lambda e: reveal(e.one("aws:s3/bucketObjectv2:BucketObjectv2").inputs["content"])
    assert content(before) != content(after)
    assert before.outputs["bundle_version"] != after.outputs["bundle_version"]


def test_same_inputs_give_the_same_bundle_version(roster_file):
    assert run(roster_file).outputs["bundle_version"] == run(roster_file).outputs["bundle_version"]


# ---------------------------------------------------------------- secrets


def test_no_plaintext_password_or_hash_outside_a_pulumi_secret(tmp_path):
    roster = write_roster(tmp_path / "r.csv", 20)
    evaluation = run(roster, relay={"host": "email-smtp.eu-west-1.amazonaws.com", "username": "AKIAEXAMPLE"},
                     extra={"mailstack:relay_password": "relay-secret-value-123"},
                     secret_keys=["mailstack:relay_password"])
    seed = evaluation.one("random:index/randomPassword:RandomPassword")
    # The mock's seed value is derived from the resource name (see offline.RecordingMocks).
    import hashlib
    seed_value = hashlib.sha256(seed.name.encode()).hexdigest()[:48]
    plaintexts = {initial_password(seed_value, f"user{n}@example.com") for n in range(0, 20, 2)}
    from mailstack.infra.standins import standin_key_pair

    dkim_private = standin_key_pair(evaluation.one("tls:index/privateKey:PrivateKey").name)["privateKeyPem"]
    plaintexts |= {"relay-secret-value-123", seed_value, dkim_private.splitlines()[1]}
    found_secret = set()
    for resource in evaluation.resources:
        for text, secret in walk_strings(resource.inputs):
            leaked = [p for p in plaintexts if p in text]
            has_hash = "{SSHA512}" in text or "{SHA512-CRYPT}" in text
            if leaked or has_hash:
                assert secret, f"{resource.type} {resource.name} carries a secret outside a Pulumi secret"
                found_secret.add(resource.type)
    # The check above must have seen the hashes and the relay password, as secrets.
    assert found_secret == {"aws:s3/bucketObjectv2:BucketObjectv2", "aws:ssm/parameter:Parameter"}
    parameter = evaluation.one("aws:ssm/parameter:Parameter").inputs
    assert parameter["type"] == "SecureString" and is_secret(parameter["value"])


def test_user_data_is_small_and_holds_no_mailbox_data(tmp_path):
    evaluation = run(write_roster(tmp_path / "r.csv", 5000))
    user_data = evaluation.one("aws:ec2/instance:Instance").inputs["userData"]
    assert len(user_data.encode()) < 16 * 1024
    assert user_data.startswith("#cloud-config\n")
    assert "user1@example.com" not in user_data and "$6$" not in user_data and "{SSHA512}" not in user_data


def test_each_domain_publishes_the_public_half_of_the_bundles_dkim_key(evaluation):
    from cryptography.hazmat.primitives import serialization

    files = json.loads(reveal(evaluation.one("aws:s3/bucketObjectv2:BucketObjectv2").inputs["content"]))["files"]
    key_file = files["/etc/opendkim/keys/mailstack.private"]
    assert key_file["mode"] == "0600" and key_file["owner"] == "opendkim:opendkim"
    private = serialization.load_pem_private_key(key_file["content"].encode(), password=None)
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64

    (record,) = [r for r in evaluation.of_type("aws:route53/record:Record") if r.name == "mailstack._domainkey.example.com-TXT"]
    value = f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    assert record.inputs["records"] == ['""'.join(value[i:i + 255] for i in range(0, len(value), 255))]
    assert evaluation.outputs["dkim_public_key"] == base64.b64encode(der).decode()


# --------------------------------------------------------- scale, outputs


def test_resource_count_does_not_grow_with_the_roster(tmp_path):
    small = run(write_roster(tmp_path / "s.csv", 5))
    large = run(write_roster(tmp_path / "l.csv", 500))
    # Registration order is asynchronous; the set of resources is what must not change.
    assert sorted((r.type, r.name) for r in small.resources) == sorted((r.type, r.name) for r in large.resources)


def test_outputs_tell_ops_the_host_the_bundle_the_records_and_the_next_step(evaluation):
    out = evaluation.outputs
    assert out["host_name"] == "mail.example.com" and out["host_ip"] == "203.0.113.25"
    assert len(out["bundle_version"]) == 16 and out["mailboxes"] == 5
    by_type = {(r["name"], r["type"]): r for r in out["dns_records"]}
    assert by_type[("mail.example.com", "A")]["values"] == ["203.0.113.25"]
    assert by_type[("example.com", "MX")]["values"] == ["10 mail.example.net."]
    assert by_type[("example.com", "MX")]["ttl"] == 300
    assert all(r["reason"] for r in out["dns_records"])
    assert "mailstack sync -s test" in out["next_step"] and "mailstack verify -s test --record" in out["next_step"]


# -------------------------------------------------------------- bad input


def test_invalid_settings_stop_the_program_before_any_resource(roster_file, caplog):
    with pytest.raises(pulumi.RunError, match="1 problem"):
        run(roster_file, host={"name": "mail", "instance_type": "t3.small"})
    # The failed run declared nothing: a fresh recorder sees no resource from it.
    assert "mailstack:host.name: 'mail' has no dot: write the whole name, e.g. mail.example.com" in caplog.text


def test_invalid_settings_declare_no_resource(roster_file, declared_types):
    with pytest.raises(pulumi.RunError):
        run(roster_file, cutover_ttl="soon")
    assert declared_types == []


def test_invalid_roster_stops_the_program_naming_file_and_line(tmp_path, caplog):
    roster = tmp_path / "bad.csv"
    roster.write_text("address,name,quota,protocol,aliases,password\n"
                      "a@example.com,A,2G,imap,,generate\n"
                      "b@example.org,B,2G,imap,,generate\n")
    with pytest.raises(pulumi.RunError, match="nothing was changed"):
        run(roster)
    assert f"{roster}:3" in caplog.text and "example.org" in caplog.text


def test_relay_user_without_secret_password_is_refused(roster_file, caplog):
    with pytest.raises(pulumi.RunError):
        run(roster_file, relay={"host": "email-smtp.eu-west-1.amazonaws.com", "username": "AKIAEXAMPLE"})
    assert "pulumi config set --secret mailstack:relay_password" in caplog.text


def test_relay_password_stored_in_plain_config_is_refused(roster_file, caplog):
    with pytest.raises(pulumi.RunError):
        run(roster_file, relay={"host": "email-smtp.eu-west-1.amazonaws.com", "username": "AKIAEXAMPLE"},
            extra={"mailstack:relay_password": "oops-plain"})
    assert "stored in plain text" in caplog.text and "oops-plain" not in caplog.text
