"""MailHost: the EC2 instance, its role and its Elastic IP."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from mailstack.infra.placement import STACK_TAG
from mailstack.infra.policies import assume_role, ssm_agent_policy
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
    """The new mail host: Debian 12, IMDSv2 only, encrypted root, no SSH key, least-privilege role.

    Built in three steps, because the stack key's policy names the role and the role's policy names the key:
    the role (here), then :meth:`allow` its policy, then :meth:`launch` the instance.
    """

    def __init__(self, name: str, *, settings: Settings, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:infra:MailHost", name, None, opts)
        self._name = name
        self.settings = settings
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(name, assume_role_policy=assume_role("ec2.amazonaws.com"), opts=child)
        # Not AmazonSSMManagedInstanceCore: it grants ssm:GetParameter(s) on every parameter of the account.
        aws.iam.RolePolicy(f"{name}-ssm-agent", role=self.role.id, policy=ssm_agent_policy(), opts=child)
        self.profile = aws.iam.InstanceProfile(name, role=self.role.name, opts=child)

    def allow(self, policy: pulumi.Input[str]) -> aws.iam.RolePolicy:
        """The host's own permissions (bundle, ACME challenge, secrets, stack key)."""
        return aws.iam.RolePolicy(self._name, role=self.role.id, policy=policy, opts=pulumi.ResourceOptions(parent=self))

    def launch(self, *, stack_name: str, subnet_id: pulumi.Input[str], security_group_id: pulumi.Input[str],
               user_data: pulumi.Input[str], protect: bool = True) -> None:
        """The instance and its Elastic IP.

        ``protect`` refuses any replacement or deletion of the running mail host at preview; the program lifts it
        only for an update that ``host.replace`` acknowledges (see placement.py). ``force_destroy`` is set on
        every update, so that Pulumi's state already holds it when a later update has to delete the
        termination-protected host (the provider reads it from the state, not from the replacing update).
        """
        name, settings = self._name, self.settings
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
            iam_instance_profile=self.profile.name,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1,
            ),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                encrypted=True, volume_type="gp3", volume_size=settings.host.root_volume_gb, delete_on_termination=True,
            ),
            user_data=user_data,
            user_data_replace_on_change=False,
            disable_api_termination=True,
            force_destroy=True,
            # The stack tag tells the program's lookups that this update (with force_destroy) reached the host.
            tags={"Name": settings.host.name, STACK_TAG: stack_name},
            # The user data only bootstraps the host agent, which then updates itself from the bundle: an
            # edit must not stop and start a running mail host (EC2 changes user data only while stopped).
            # A newer Debian image must not replace it either; pin host.ami to move on purpose.
            opts=pulumi.ResourceOptions(parent=self, protect=protect,
                                        ignore_changes=USER_DATA_IGNORED + ([] if pinned else ["ami"])),
        )
        self.eip = aws.ec2.Eip(name, domain="vpc", instance=self.instance.id, tags={"Name": settings.host.name},
                               opts=pulumi.ResourceOptions(parent=self))
        self.public_ip = self.eip.public_ip
        self.register_outputs({"instance_id": self.instance.id, "public_ip": self.eip.public_ip})
