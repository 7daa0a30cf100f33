"""StackKey: the customer-managed KMS key encrypting the stack's secrets at rest.

The config bundle (DKIM private key, password hashes) and every SSM
SecureString the program writes are encrypted with it. Its policy lets the
account administer and use it through IAM (the operators, the deploying role)
and lets the host's role only decrypt, and only through S3 and SSM.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from mailstack.infra.policies import key_policy


class StackKey(pulumi.ComponentResource):
    """A symmetric KMS key with yearly rotation, and an alias naming its stack."""

    def __init__(self, name: str, *, host_role_arn: pulumi.Input[str], region: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:infra:StackKey", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.key = aws.kms.Key(
            name,
            description=f"{name}: the config bundle and the SSM secrets of the mail host",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=pulumi.Output.all(host_role_arn, region).apply(
                lambda args: key_policy(host_role_arn=args[0], region=args[1])),
            opts=child,
        )
        aws.kms.Alias(name, name=f"alias/{name}", target_key_id=self.key.key_id, opts=child)
        self.arn = self.key.arn
        self.register_outputs({"arn": self.key.arn})
