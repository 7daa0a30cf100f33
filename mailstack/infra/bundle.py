"""ConfigBundle: the private S3 object the host pulls its configuration and mailboxes from."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from mailstack.infra.policies import deny_insecure_transport

BUNDLE_KEY = "bundle.json"


class ConfigBundle(pulumi.ComponentResource):
    """A private, encrypted, versioned bucket holding one bundle object.

    The bundle content is a secret Output: it carries password hashes.
    Changing it (a roster edit) updates this object only, never the instance.
    """

    def __init__(self, name: str, *, document: pulumi.Output[str], opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:infra:ConfigBundle", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = aws.s3.Bucket(name, bucket_prefix=f"{name}-", opts=child)
        block = aws.s3.BucketPublicAccessBlock(
            name, bucket=self.bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child,
        )
        aws.s3.BucketOwnershipControls(
            name, bucket=self.bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"), opts=child,
        )
        encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            name, bucket=self.bucket.id,
            rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="AES256"),
                bucket_key_enabled=True,
            )],
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            name, bucket=self.bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"), opts=child,
        )
        aws.s3.BucketPolicy(
            name, bucket=self.bucket.id, policy=self.bucket.arn.apply(deny_insecure_transport),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[block]),
        )
        self.object = aws.s3.BucketObjectv2(
            name,
            bucket=self.bucket.id,
            key=BUNDLE_KEY,
            content=pulumi.Output.secret(document),
            content_type="application/json",
            server_side_encryption="AES256",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[encryption, versioning]),
        )
        self.object_arn = pulumi.Output.concat(self.bucket.arn, "/", BUNDLE_KEY)
        self.register_outputs({"bucket": self.bucket.id})
