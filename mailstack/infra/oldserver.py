"""OldMailServer: the old server, when it is an EC2 instance in this account.

Imported and protected while mail may still reach it; at decommission, a final
snapshot of each of its volumes is taken first, and only once every snapshot
has completed is the instance left out of the program, so that Pulumi
deletes it (a second ``pulumi up`` of the decommission phase). Once it no
longer exists (deleted by that update, or by hand), the component declares
nothing and says so.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from mailstack.infra.placement import LIVE_STATES

FINAL_SNAPSHOT_TAG = "mailstack:final-snapshot-of"
SNAPSHOT_TIMEOUTS = pulumi.CustomTimeouts(create="6h", delete="1h")
"""A first snapshot copies the whole volume: hours for a large one (the provider's default is 10 minutes)."""
TORN_DOWN = "already torn down: the instance no longer exists"


def instance_input_names() -> list[str]:
    """Every input property of ``aws.ec2.Instance``, as Pulumi names them, read from the SDK itself."""
    return sorted(getattr(prop.fget, "_pulumi_name", name) for name, prop in vars(aws.ec2.InstanceArgs).items()
                  if isinstance(prop, property))


# The stack adopts the old server only to snapshot and remove it: it must never change it. Every input is
# ignored (complete by construction, whatever the SDK adds), except force_destroy: ignore_changes=["*"] would
# keep the imported false in the state too, and deleting a termination-protected instance needs it true there,
# written by an update before the one that deletes it.
NEVER_CHANGE = [name for name in instance_input_names() if name != "forceDestroy"]


def final_snapshots_done(instance_id: str, volume_count: int) -> bool:
    """True once a completed final snapshot exists for every volume of the old server."""
    found = aws.ebs.get_snapshot_ids(filters=[
        {"name": f"tag:{FINAL_SNAPSHOT_TAG}", "values": [instance_id]},
        {"name": "status", "values": ["completed"]},
    ])
    return len(found.ids) >= volume_count


def still_exists(instance_id: str) -> bool:
    """True while the instance exists (terminated or terminating counts as gone)."""
    found = aws.ec2.get_instances(filters=[{"name": "instance-id", "values": [instance_id]}],
                                  instance_state_names=LIVE_STATES)
    return instance_id in (found.ids or [])


class OldMailServer(pulumi.ComponentResource):
    """The old server's instance: adopted and protected, then snapshotted, then deleted."""

    def __init__(self, name: str, *, instance_id: str, phase: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:infra:OldMailServer", name, None, opts)
        self.snapshots = []
        self.instance = None
        self.gone = not still_exists(instance_id)
        if self.gone:
            self.register_outputs({})
            return
        info = aws.ec2.get_instance(instance_id=instance_id)
        volumes = [device.volume_id for device in [*info.root_block_devices, *info.ebs_block_devices]]
        decommission = phase == "decommission"
        if decommission:
            self.snapshots = [
                aws.ebs.Snapshot(
                    f"{name}-final-{volume}",
                    volume_id=volume,
                    description=f"final snapshot of {volume} of the old mail server {instance_id}",
                    tags={FINAL_SNAPSHOT_TAG: instance_id, "Name": f"{name} final"},
                    # The last copy of the old server: kept even when the stack is destroyed.
                    opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, custom_timeouts=SNAPSHOT_TIMEOUTS),
                )
                for volume in volumes
            ]
        if not (decommission and final_snapshots_done(instance_id, len(volumes))):
            self.instance = aws.ec2.Instance(
                name,
                ami=info.ami,
                instance_type=info.instance_type,
                subnet_id=info.subnet_id,
                force_destroy=True,
                opts=pulumi.ResourceOptions(
                    parent=self,
                    import_=instance_id,
                    protect=not decommission,
                    ignore_changes=NEVER_CHANGE,
                    depends_on=self.snapshots,
                ),
            )
        self.register_outputs({})

    @property
    def status(self) -> str:
        """What this run does with the old server, for the stack outputs."""
        if self.gone:
            return TORN_DOWN
        if self.instance is None:
            return "final snapshots completed; the instance is deleted by this update"
        if self.snapshots:
            return "final snapshots taken by this update; run pulumi up again once they complete to delete the instance"
        return "adopted and protected; kept until decommission"
