"""MailDns: the stack's Route53 records and the host's reverse DNS."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from mailstack.host.records import Record


class MailDns(pulumi.ComponentResource):
    """Route53 record sets from :mod:`mailstack.host.records`, then the PTR of the Elastic IP.

    Each record set keeps one resource name (``name-type``) in every phase, so
    a phase change shows as an update of just the record sets it changes. The
    PTR comes after the A record: AWS refuses reverse DNS whose forward name
    does not resolve to the address.
    """

    def __init__(self, name: str, *, zone_id: pulumi.Input[str],
                 records: list[tuple[Record, pulumi.Input[list[str]]]],
                 host_name: str, allocation_id: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None):
        super().__init__("mailstack:infra:MailDns", name, None, opts)
        self.records = {
            record.key: aws.route53.Record(
                record.key,
                zone_id=zone_id,
                name=record.name,
                type=record.type,
                ttl=record.ttl,
                records=values,
                # MX and apex TXT exist before the stack: take them over (apex TXT values we do not own are kept).
                allow_overwrite=True,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for record, values in records
        }
        self.reverse = aws.ec2.EipDomainName(
            name,
            allocation_id=allocation_id,
            domain_name=host_name,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.records[f"{host_name}-A"]]),
        )
        self.register_outputs({})
