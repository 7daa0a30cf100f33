"""MailFirewall: the host's security group."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from mailstack.host.firewall import ANYWHERE_V4, ANYWHERE_V6, IngressRule


class MailFirewall(pulumi.ComponentResource):
    """A security group open exactly on the given ports; all egress allowed (mail goes out on 25)."""

    def __init__(self, name: str, *, vpc_id: pulumi.Input[str], rules: tuple[IngressRule, ...],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:infra:MailFirewall", name, None, opts)
        self.group = aws.ec2.SecurityGroup(
            name,
            description="mailstack mail host: mail ports only; no SSH (use SSM Session Manager)",
            vpc_id=vpc_id,
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp", from_port=rule.port, to_port=rule.port,
                    cidr_blocks=[ANYWHERE_V4], ipv6_cidr_blocks=[ANYWHERE_V6], description=rule.reason,
                )
                for rule in rules
            ],
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    protocol="-1", from_port=0, to_port=0,
                    cidr_blocks=[ANYWHERE_V4], ipv6_cidr_blocks=[ANYWHERE_V6],
                    description="outbound mail delivery, packages, AWS APIs",
                )
            ],
            tags={"Name": name},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.id = self.group.id
        self.register_outputs({"id": self.group.id})
