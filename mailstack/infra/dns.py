"""MailDns: the stack's Route53 records and the host's reverse DNS."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from mailstack.records import Record


class MailDns(pulumi.ComponentResource):
    """Route53 record sets from :mod:`mailstack.records`, then the PTR of the Elastic IP.

    The PTR comes after the A record: AWS refuses reverse DNS whose forward
    name does not resolve to the address.
    """

    def __init__(self, name: str, *, zone_id: pulumi.Input[str], records: pulumi.Input[list[Record]],
                 host_name: str, allocation_id: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:infra:MailDns", name, None, opts)
        self.records = [
            aws.route53.Record(
                f"{record.name}-{record.type}",
                zone_id=zone_id,
                name=record.name,
                type=record.type,
                ttl=record.ttl,
                records=list(record.values),
                allow_overwrite=True,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for record in records
        ]
        self.reverse = aws.ec2.EipDomainName(
            name,
            allocation_id=allocation_id,
            domain_name=host_name,
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.records),
        )
        self.register_outputs({})
