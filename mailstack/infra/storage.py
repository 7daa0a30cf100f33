"""MailVolume: the encrypted EBS volume holding every Maildir, with daily snapshots."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from mailstack.infra.policies import assume_role
from mailstack.stack.settings import Settings

SNAPSHOT_TAG = "mailstack:snapshot"
DEVICE_NAME = "/dev/sdf"


class MailVolume(pulumi.ComponentResource):
    """The mail volume: encrypted gp3, protected from deletion, snapshotted daily by DLM."""

    def __init__(self, name: str, *, settings: Settings, availability_zone: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:infra:MailVolume", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.volume = aws.ebs.Volume(
            name,
            availability_zone=availability_zone,
            size=settings.host.mail_volume_gb,
            type="gp3",
            iops=settings.host.mail_volume_iops,
            encrypted=True,
            final_snapshot=True,
            tags={"Name": f"{settings.host.name} mail", SNAPSHOT_TAG: name},
            # Every mailbox lives here: a Pulumi mistake must never delete it.
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )
        role = aws.iam.Role(f"{name}-snapshots", assume_role_policy=assume_role("dlm.amazonaws.com"), opts=child)
        aws.iam.RolePolicyAttachment(
            f"{name}-snapshots",
            role=role.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AWSDataLifecycleManagerServiceRole",
            opts=child,
        )
        self.snapshot_policy = aws.dlm.LifecyclePolicy(
            name,
            description=f"daily snapshots of the {settings.host.name} mail volume",
            execution_role_arn=role.arn,
            state="ENABLED",
            policy_details=aws.dlm.LifecyclePolicyPolicyDetailsArgs(
                resource_types=["VOLUME"],
                target_tags={SNAPSHOT_TAG: name},
                schedules=[aws.dlm.LifecyclePolicyPolicyDetailsScheduleArgs(
                    name="daily",
                    create_rule=aws.dlm.LifecyclePolicyPolicyDetailsScheduleCreateRuleArgs(
                        interval=24, interval_unit="HOURS", times=settings.snapshots.time,
                    ),
                    retain_rule=aws.dlm.LifecyclePolicyPolicyDetailsScheduleRetainRuleArgs(count=settings.snapshots.keep),
                    copy_tags=True,
                )],
            ),
            opts=child,
        )
        self.id = self.volume.id
        self.register_outputs({"id": self.volume.id})

    def attach(self, instance_id: pulumi.Input[str]) -> aws.ec2.VolumeAttachment:
        """Attach the volume to the host (stopping mail cleanly before any detach).

        When the host is replaced, the old attachment must go first: a volume is attached to one instance at a
        time, and creating the new attachment while the old one holds the volume fails with VolumeInUse
        (pulumi/pulumi-aws#2769), leaving the new host without its mail.
        """
        return aws.ec2.VolumeAttachment(
            self.volume._name,
            device_name=DEVICE_NAME,
            volume_id=self.volume.id,
            instance_id=instance_id,
            stop_instance_before_detaching=True,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
