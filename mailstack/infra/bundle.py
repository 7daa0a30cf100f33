"""ConfigBundle: the private S3 object the host pulls its configuration and mailboxes from."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from mailstack.infra.policies import deny_insecure_transport

BUNDLE_KEY = "bundle.json"
NONCURRENT_DAYS = 3
"""Days a replaced bundle version is kept (for a look back after a bad roster change), then deleted: every
version carries the DKIM private key and the password hashes."""


class ConfigBundle(pulumi.ComponentResource):
    """A private, versioned bucket holding one bundle object, encrypted with the stack's KMS key.

    The bundle content is a secret Output: it carries password hashes.
    Changing it (a roster edit) updates this object only, never the instance.
    Replaced versions expire after ``NONCURRENT_DAYS``.
    """

    def __init__(self, name: str, *, document: pulumi.Output[str], kms_key_arn: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None):
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
                    sse_algorithm="aws:kms", kms_master_key_id=kms_key_arn),
                bucket_key_enabled=True,
            )],
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            name, bucket=self.bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"), opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            name, bucket=self.bucket.id,
            rules=[aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="expire-replaced-bundles", status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                    noncurrent_days=NONCURRENT_DAYS),
                abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                    days_after_initiation=1),
            )],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
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
            server_side_encryption="aws:kms",
            kms_key_id=kms_key_arn,
            bucket_key_enabled=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[encryption, versioning]),
        )
        self.object_arn = pulumi.Output.concat(self.bucket.arn, "/", BUNDLE_KEY)
        self.register_outputs({"bucket": self.bucket.id})
