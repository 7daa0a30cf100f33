"""OldMailServer: the old server, when it is an EC2 instance in this account.

Imported and protected while mail may still reach it; at decommission, a final
snapshot of each of its volumes is taken first, and only once every snapshot
has completed is the instance left out of the program, so that Pulumi
deletes it (a second ``pulumi up`` of the decommission phase).
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

FINAL_SNAPSHOT_TAG = "mailstack:final-snapshot-of"

# The stack adopts the old server only to snapshot and remove it: it must never change it.
_NEVER_CHANGE = [
    "ami", "instanceType", "subnetId", "vpcSecurityGroupIds", "securityGroups", "userData", "userDataBase64",
    "tags", "volumeTags", "rootBlockDevice", "ebsBlockDevices", "ephemeralBlockDevices", "networkInterfaces",
    "metadataOptions", "iamInstanceProfile", "keyName", "associatePublicIpAddress", "privateIp",
    "secondaryPrivateIps", "sourceDestCheck", "creditSpecification", "cpuOptions", "disableApiStop",
    "disableApiTermination", "ebsOptimized", "monitoring", "tenancy", "hibernation", "availabilityZone",
    "placementGroup", "maintenanceOptions", "enclaveOptions", "privateDnsNameOptions", "capacityReservationSpecification",
    "instanceInitiatedShutdownBehavior", "userDataReplaceOnChange",
]


def final_snapshots_done(instance_id: str, volume_count: int) -> bool:
    """True once a completed final snapshot exists for every volume of the old server."""
    found = aws.ebs.get_snapshot_ids(filters=[
        {"name": f"tag:{FINAL_SNAPSHOT_TAG}", "values": [instance_id]},
        {"name": "status", "values": ["completed"]},
    ])
    return len(found.ids) >= volume_count


class OldMailServer(pulumi.ComponentResource):
    """The old server's instance: adopted and protected, then snapshotted, then deleted."""

    def __init__(self, name: str, *, instance_id: str, phase: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:infra:OldMailServer", name, None, opts)
        info = aws.ec2.get_instance(instance_id=instance_id)
        volumes = [device.volume_id for device in [*info.root_block_devices, *info.ebs_block_devices]]
        decommission = phase == "decommission"
        self.snapshots = []
        if decommission:
            self.snapshots = [
                aws.ebs.Snapshot(
                    f"{name}-final-{volume}",
                    volume_id=volume,
                    description=f"final snapshot of {volume} of the old mail server {instance_id}",
                    tags={FINAL_SNAPSHOT_TAG: instance_id, "Name": f"{name} final"},
                    # The last copy of the old server: kept even when the stack is destroyed.
                    opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
                )
                for volume in volumes
            ]
        self.instance = None
        if not (decommission and final_snapshots_done(instance_id, len(volumes))):
            self.instance = aws.ec2.Instance(
                name,
                ami=info.ami,
                instance_type=info.instance_type,
                subnet_id=info.subnet_id,
                opts=pulumi.ResourceOptions(
                    parent=self,
                    import_=instance_id,
                    protect=not decommission,
                    ignore_changes=_NEVER_CHANGE,
                    depends_on=self.snapshots,
                ),
            )
        self.register_outputs({})

    @property
    def status(self) -> str:
        """What this run does with the old server, for the stack outputs."""
        if self.instance is None:
            return "final snapshots completed; the instance is deleted by this update"
        if self.snapshots:
            return "final snapshots taken by this update; run pulumi up again once they complete to delete the instance"
        return "adopted and protected; kept until decommission"
