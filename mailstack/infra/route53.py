"""The live zone and the host's address, read with boto3 (a thin shell: no decisions here).

Every client honours ``AWS_ENDPOINT_URL`` (passed explicitly: Debian 12's
boto3 ignores the variable), so the same code reads a local AWS emulator.
"""

from __future__ import annotations

import os

from mailstack.host.plan import RecordSet, from_route53

ROUTE53_REGION = "us-east-1"  # Route53 is global; its API lives in us-east-1


class AwsReadError(Exception):
    """AWS could not be read: what was asked, and why it failed."""


def client(service: str, region: str):
    """A boto3 client for ``service``, at ``AWS_ENDPOINT_URL`` when it is set."""
    import boto3

    return boto3.client(service, region_name=region, endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def _failed(what: str, exc: Exception) -> AwsReadError:
    return AwsReadError(f"could not read {what}: {exc}")


def find_zone(route53, name: str) -> str:
    """The id of the public hosted zone ``name``; exactly one must exist."""
    wanted = name.rstrip(".").lower() + "."
    found = []
    for page in route53.get_paginator("list_hosted_zones").paginate():
        found += [z for z in page["HostedZones"]
                  if z["Name"].lower() == wanted and not z.get("Config", {}).get("PrivateZone")]
    if len(found) != 1:
        raise AwsReadError(f"expected one public hosted zone {wanted} in the account, found {len(found)}"
                           + (f": {', '.join(z['Id'] for z in found)}" if found else ""))
    return found[0]["Id"].split("/")[-1]


def read_zone(name: str) -> list[RecordSet]:
    """Every record set of the public hosted zone ``name``, all pages of them."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        route53 = client("route53", ROUTE53_REGION)
        zone_id = find_zone(route53, name)
        pages = route53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id)
        return [from_route53(rrset) for page in pages for rrset in page["ResourceRecordSets"]]
    except (BotoCoreError, ClientError) as exc:
        raise _failed(f"the Route53 zone {name}", exc) from None


def host_address(host_name: str, region: str) -> str | None:
    """The Elastic IP tagged with the host's name (as the program tags it), or None before the first ``pulumi up``."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        found = client("ec2", region).describe_addresses(Filters=[{"Name": "tag:Name", "Values": [host_name]}])
    except (BotoCoreError, ClientError) as exc:
        raise _failed(f"the Elastic IP of {host_name} in {region}", exc) from None
    addresses = [a["PublicIp"] for a in found["Addresses"] if a.get("PublicIp")]
    return addresses[0] if addresses else None
