"""SesSending: Amazon SES as the host's relay (``mailstack:ses``)."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from mailstack.infra.policies import ses_send_policy

DKIM_TOKENS = 3
"""Easy DKIM gives each domain identity three tokens, each published as a CNAME to SES's key."""


def dkim_cname(domain: str, token: str) -> tuple[str, str]:
    """The Easy DKIM record of one token: its name and the SES host it points to."""
    return f"{token}._domainkey.{domain}", f"{token}.dkim.amazonses.com"


class SesSending(pulumi.ComponentResource):
    """Each mail domain verified as an SES identity (Easy DKIM, its three CNAMEs in Route53), and an SMTP user.

    The SMTP user is an IAM user that may only send raw mail as these
    identities; its access key id is the SMTP user name, and the SMTP
    password derived from its secret (:attr:`smtp_password`) stays a Pulumi
    secret. SES verifies a domain once its CNAMEs resolve; until the account
    has production access, SES delivers only to verified addresses and its
    mailbox simulator. ``region`` None: the provider's region (the stack's).
    """

    def __init__(self, name: str, *, domains: list[str], zone_id: pulumi.Input[str], ttl: int,
                 region: str | None = None, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:infra:SesSending", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # The identities live in the SES region, and the SMTP password is derived for it (SigV4 is per region).
        regional = child if region is None else pulumi.ResourceOptions(
            parent=self, provider=aws.Provider(f"{name}-{region}", region=region, opts=child))
        self.identities = {
            domain: aws.sesv2.EmailIdentity(f"{name}-{domain}", email_identity=domain, opts=regional)
            for domain in domains
        }
        self.dkim_records = []
        for domain, identity in self.identities.items():
            tokens = identity.dkim_signing_attributes.apply(lambda attributes: attributes.tokens)
            for n in range(DKIM_TOKENS):
                cname = tokens.apply(lambda each, n=n, domain=domain: dkim_cname(domain, each[n]))
                self.dkim_records.append(aws.route53.Record(
                    f"{name}-{domain}-dkim-{n + 1}", zone_id=zone_id, type="CNAME", ttl=ttl,
                    name=cname.apply(lambda pair: pair[0]), records=[cname.apply(lambda pair: pair[1])], opts=child))
        self.user = aws.iam.User(name, path="/mailstack/", opts=child)
        aws.iam.UserPolicy(name, user=self.user.name, opts=child, policy=pulumi.Output.all(
            *[identity.arn for identity in self.identities.values()]).apply(lambda arns: ses_send_policy(list(arns))))
        key = aws.iam.AccessKey(name, user=self.user.name, opts=regional)
        self.smtp_user: pulumi.Output[str] = key.id
        self.smtp_password: pulumi.Output[str] = pulumi.Output.secret(key.ses_smtp_password_v4)
        self.register_outputs({"smtp_user": self.smtp_user})
