"""Outbound mail through Amazon SES under Pulumi mocks: identities with Easy DKIM, the SMTP user, its secret."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pulumi
import pytest

from mailstack.infra.offline import Evaluation, evaluate, is_secret, reveal
from tests.conftest import PROJECT, RELAY, pulumi_config, stack_values, write_roster
from tests.infra.test_program import walk_strings

DOMAINS = ["example.com", "sales.example.com"]


def run(roster: Path, *, extra: dict | None = None, secret_keys=None, **overrides) -> Evaluation:
    config = pulumi_config(stack_values(roster, domains=DOMAINS, **overrides))
    config.update(extra or {})
    return evaluate(config, project_dir=PROJECT, stack="test", secret_keys=secret_keys)


@pytest.fixture
def roster(tmp_path) -> Path:
    return write_roster(tmp_path / "r.csv", 4)


@pytest.fixture
def ses(roster) -> Evaluation:
    return run(roster, ses={})


def host_files(evaluation: Evaluation) -> dict[str, str]:
    bundle = json.loads(reveal(evaluation.one("aws:s3/bucketObjectv2:BucketObjectv2").inputs["content"]))
    return {path: spec["content"] for path, spec in bundle["files"].items()}


def smtp_password(evaluation: Evaluation) -> str:
    """The SES SMTP password the mocks' provider derived (see offline.RecordingMocks)."""
    key = evaluation.one("aws:iam/accessKey:AccessKey")
    return "B" + hashlib.sha256(f"{key.name}-smtp".encode()).hexdigest()[:43]


def test_every_mail_domain_is_an_ses_identity_with_its_three_dkim_cnames(ses):
    identities = {r.inputs["emailIdentity"] for r in ses.of_type("aws:sesv2/emailIdentity:EmailIdentity")}
    assert identities == set(DOMAINS)
    cnames = [reveal(r.inputs) for r in ses.of_type("aws:route53/record:Record")
              if r.inputs["type"] == "CNAME" and "._domainkey." in reveal(r.inputs["name"])]
    assert len(cnames) == 3 * len(DOMAINS)
    for domain in DOMAINS:
        tokens = [hashlib.sha256(f"{domain}-{n}".encode()).hexdigest()[:32] for n in range(3)]
        mine = sorted((c["name"], c["records"][0]) for c in cnames if c["name"].endswith(f"._domainkey.{domain}"))
        assert mine == sorted((f"{t}._domainkey.{domain}", f"{t}.dkim.amazonses.com") for t in tokens)
    assert {c["zoneId"] for c in cnames} == {"Z0123456789ABCDEFGHIJ"}


def test_the_smtp_user_may_only_send_as_the_stacks_identities(ses):
    (policy,) = ses.of_type("aws:iam/userPolicy:UserPolicy")
    statements = json.loads(reveal(policy.inputs["policy"]))["Statement"]
    assert statements == [{"Sid": "SendAsTheStacksDomains", "Effect": "Allow", "Action": "ses:SendRawEmail",
                           "Resource": [f"arn:aws:ses:eu-west-1:123456789012:identity/{d}" for d in DOMAINS]}]
    assert ses.one("aws:iam/accessKey:AccessKey").inputs["user"] == ses.one("aws:iam/user:User").name


def test_the_smtp_password_goes_only_as_a_secret_into_the_relay_password_parameter(ses):
    parameter = ses.one("aws:ssm/parameter:Parameter").inputs
    assert parameter["name"] == "/mailstack-test/relay-password" and parameter["type"] == "SecureString"
    assert is_secret(parameter["value"]) and reveal(parameter["value"]) == smtp_password(ses)
    password = smtp_password(ses)
    for resource in ses.resources:
        for text, secret in walk_strings(resource.inputs):
            assert password not in text or secret, f"{resource.type} {resource.name} carries the SMTP password"
    assert password not in json.dumps(ses.outputs)
    user_data = ses.one("aws:ec2/instance:Instance").inputs["userData"]
    assert password not in json.dumps(user_data)
    assert all(password not in content for content in host_files(ses).values())


def test_the_host_relays_through_ses_with_the_access_key_as_user(ses):
    files = host_files(ses)
    user = ses.one("aws:iam/accessKey:AccessKey")
    key_id = "AKIA" + hashlib.sha256(user.name.encode()).hexdigest()[:16].upper()
    host = json.loads(files["/etc/mailstack/host.json"])
    assert host["relay"] == {"host": "email-smtp.eu-west-1.amazonaws.com", "port": 587, "username": key_id}
    assert host["relay_password_parameter"] == "/mailstack-test/relay-password"
    main_cf = files["/etc/postfix/main.cf"]
    assert "relayhost = [email-smtp.eu-west-1.amazonaws.com]:587" in main_cf
    assert "smtp_sasl_auth_enable = yes" in main_cf and "smtp_tls_security_level = encrypt" in main_cf
    assert "smtp_discard_ehlo_keywords = dsn" in main_cf  # the host reports "relayed" itself
    assert ses.outputs["outbound"] == "Amazon SES (the stack's region)"


def test_an_ses_region_of_its_own_holds_the_identities_and_names_the_endpoint(roster):
    evaluation = run(roster, ses={"region": "us-east-1"})
    (provider,) = evaluation.of_type("pulumi:providers:aws")
    assert provider.inputs["region"] == "us-east-1"
    host = json.loads(host_files(evaluation)["/etc/mailstack/host.json"])
    assert host["relay"]["host"] == "email-smtp.us-east-1.amazonaws.com"
    assert evaluation.outputs["outbound"] == "Amazon SES (us-east-1)"


def test_naming_the_stacks_own_region_keeps_the_default_provider(roster):
    evaluation = run(roster, ses={"region": "eu-west-1"})
    assert not evaluation.of_type("pulumi:providers:aws")
    assert len(evaluation.of_type("aws:sesv2/emailIdentity:EmailIdentity")) == len(DOMAINS)


def test_ses_with_a_relay_password_of_its_own_is_refused(roster, caplog):
    with pytest.raises(pulumi.RunError, match="nothing was changed"):
        run(roster, ses={}, extra={"mailstack:relay_password": "x" * 20}, secret_keys=["mailstack:relay_password"])
    assert "pulumi config rm mailstack:relay_password" in caplog.text


def test_a_stack_with_another_relay_declares_nothing_of_ses(roster):
    evaluation = run(roster, relay=RELAY)
    assert not evaluation.of_type("aws:sesv2/emailIdentity:EmailIdentity")
    assert not evaluation.of_type("aws:iam/accessKey:AccessKey")
    assert "relayhost = [smtp.relay.example.net]:587" in host_files(evaluation)["/etc/postfix/main.cf"]
    assert evaluation.outputs["outbound"] == "relay smtp.relay.example.net:587"
