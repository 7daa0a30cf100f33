"""IAM policy documents of the mail host, as pure functions of ARNs."""

from __future__ import annotations

import json


def assume_role(service: str) -> str:
    """Trust policy letting one AWS service assume the role."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    })


SSM_AGENT_ACTIONS = {
    # From AmazonSSMManagedInstanceCore, only what the agent itself needs to register and to serve Session Manager
    # and Run Command. Left out: ssm:GetParameter(s), GetDocument, DescribeDocument, GetManifest, associations,
    # inventory, patching and compliance, all on "*" there (GetParameter on "*" would void ReadHostSecrets).
    "SsmAgentRegister": ["ssm:UpdateInstanceInformation"],
    "SessionManagerChannels": ["ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
                               "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"],
    "RunCommandMessages": ["ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage", "ec2messages:FailMessage",
                           "ec2messages:GetEndpoint", "ec2messages:GetMessages", "ec2messages:SendReply"],
}


def ssm_agent_policy() -> str:
    """What Amazon's SSM agent on the host needs for Session Manager and Run Command, and nothing else.

    These actions take no resource-level restriction in IAM, hence ``*``.
    """
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": "*"}
                      for sid, actions in SSM_AGENT_ACTIONS.items()],
    })


def _account_root(role_arn: str) -> str:
    """``arn:PARTITION:iam::ACCOUNT:root`` of the account (and partition) a role ARN is in."""
    prefix, _, _ = role_arn.partition(":role/")
    return f"{prefix}:root"


def _via(region: str) -> dict:
    return {"StringEquals": {"kms:ViaService": [f"s3.{region}.amazonaws.com", f"ssm.{region}.amazonaws.com"]}}


def key_policy(*, host_role_arn: str, region: str) -> str:
    """The stack key's policy: the account administers and uses it through IAM; the host role only decrypts."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "AccountAdministersThroughIam", "Effect": "Allow",
             "Principal": {"AWS": _account_root(host_role_arn)}, "Action": "kms:*", "Resource": "*"},
            {"Sid": "HostDecryptsThroughS3AndSsm", "Effect": "Allow", "Principal": {"AWS": host_role_arn},
             "Action": "kms:Decrypt", "Resource": "*", "Condition": _via(region)},
        ],
    })


def host_policy(*, bundle_object_arn: str, zone_id: str, certificate_names: list[str], parameter_arns: list[str],
                key_arn: str, region: str) -> str:
    """What the host may do: read its bundle, answer the ACME DNS-01 challenges of its own names, read its secrets,
    and decrypt them with the stack key (through S3 and SSM only)."""
    statements = [
        {"Sid": "ReadConfigBundle", "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"],
         "Resource": bundle_object_arn},
        {"Sid": "DecryptWithStackKey", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": key_arn,
         "Condition": _via(region)},
        {"Sid": "AcmeFindZone", "Effect": "Allow", "Action": ["route53:ListHostedZones", "route53:GetChange"],
         "Resource": "*"},
        {"Sid": "AcmeChallengeOnly", "Effect": "Allow", "Action": "route53:ChangeResourceRecordSets",
         "Resource": f"arn:aws:route53:::hostedzone/{zone_id}",
         "Condition": {
             "ForAllValues:StringEquals": {
                 "route53:ChangeResourceRecordSetsNormalizedRecordNames": [f"_acme-challenge.{n}" for n in certificate_names],
                 "route53:ChangeResourceRecordSetsRecordTypes": ["TXT"],
             }
         }},
    ]
    if parameter_arns:
        statements.append({"Sid": "ReadHostSecrets", "Effect": "Allow", "Action": "ssm:GetParameter",
                           "Resource": parameter_arns})
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def ses_send_policy(identity_arns: list[str]) -> str:
    """What the SES SMTP user may do: send raw mail (all SMTP sends are) as the stack's verified identities only."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "SendAsTheStacksDomains", "Effect": "Allow", "Action": "ses:SendRawEmail",
                       "Resource": identity_arns}],
    })


def deny_insecure_transport(bucket_arn: str) -> str:
    """Bucket policy refusing any request not made over TLS."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": [bucket_arn, f"{bucket_arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }],
    })
