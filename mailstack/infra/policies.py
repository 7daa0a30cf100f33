"""IAM policy documents of the mail host, as pure functions of ARNs."""

from __future__ import annotations

import json


def assume_role(service: str) -> str:
    """Trust policy letting one AWS service assume the role."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    })


def host_policy(*, bundle_object_arn: str, zone_id: str, certificate_names: list[str], parameter_arns: list[str]) -> str:
    """What the host may do: read its bundle, answer the ACME DNS-01 challenges of its own names, read its secrets."""
    statements = [
        {"Sid": "ReadConfigBundle", "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"],
         "Resource": bundle_object_arn},
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
