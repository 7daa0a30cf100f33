"""MailHost: the EC2 instance, its role and its Elastic IP."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from mailstack.infra.policies import assume_role
from mailstack.stack.settings import Settings

DEBIAN_OWNER = "136693071363"  # Debian's official AWS account
_DEBIAN_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
USER_DATA_IGNORED = ["userData"]


def debian_ami_filters(architecture: str) -> list[dict]:
    """Filters selecting official Debian 12 images (not backports) of one architecture."""
    return [
        {"name": "name", "values": [f"debian-12-{_DEBIAN_ARCH[architecture]}-*"]},
        {"name": "architecture", "values": [architecture]},
        {"name": "root-device-type", "values": ["ebs"]},
    ]


class MailHost(pulumi.ComponentResource):
    """The new mail host: Debian 12, IMDSv2 only, encrypted root, no SSH key, least-privilege role."""

    def __init__(self, name: str, *, settings: Settings, subnet_id: pulumi.Input[str],
                 security_group_id: pulumi.Input[str], user_data: pulumi.Input[str],
                 policy: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:infra:MailHost", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(name, assume_role_policy=assume_role("ec2.amazonaws.com"), opts=child)
        aws.iam.RolePolicyAttachment(
            f"{name}-ssm", role=self.role.name,
            policy_arn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore", opts=child,
        )
        aws.iam.RolePolicy(name, role=self.role.id, policy=policy, opts=child)
        profile = aws.iam.InstanceProfile(name, role=self.role.name, opts=child)

        pinned = settings.host.ami
        ami = pinned or aws.ec2.get_ami_output(
            most_recent=True, owners=[DEBIAN_OWNER], filters=debian_ami_filters(settings.host.architecture),
        ).id
        self.instance = aws.ec2.Instance(
            name,
            ami=ami,
            instance_type=settings.host.instance_type,
            subnet_id=subnet_id,
            vpc_security_group_ids=[security_group_id],
            iam_instance_profile=profile.name,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1,
            ),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                encrypted=True, volume_type="gp3", volume_size=settings.host.root_volume_gb, delete_on_termination=True,
            ),
            user_data=user_data,
            user_data_replace_on_change=False,
            disable_api_termination=True,
            tags={"Name": settings.host.name},
            # The user data only bootstraps the host agent, which then updates itself from the bundle: an
            # edit must not stop and start a running mail host (EC2 changes user data only while stopped).
            # A newer Debian image must not replace it either; pin host.ami to move on purpose.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=USER_DATA_IGNORED + ([] if pinned else ["ami"])),
        )
        self.eip = aws.ec2.Eip(name, domain="vpc", instance=self.instance.id, tags={"Name": settings.host.name}, opts=child)
        self.public_ip = self.eip.public_ip
        self.register_outputs({"instance_id": self.instance.id, "public_ip": self.eip.public_ip})
