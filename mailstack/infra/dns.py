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
                 records: list[tuple[Record, pulumi.Input[list[str]], pulumi.Input[bool]]],
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
                # True only where the zone already serves this record set and the merge rules decided from it
                # (records.decide: kept, merged, replaced by rule); a create never overwrites a set that appeared
                # since. It matters only when the resource is created: later reads never show as a change.
                allow_overwrite=overwrite,
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["allowOverwrite"]),
            )
            for record, values, overwrite in records
        }
        self.reverse = aws.ec2.EipDomainName(
            name,
            allocation_id=allocation_id,
            domain_name=host_name,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.records[f"{host_name}-A"]]),
        )
        self.register_outputs({})
