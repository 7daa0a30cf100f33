"""Benchmark: ``mailstack plan`` of a Route53 zone of 10,000 record sets, fetch and plan timed apart.

A zone served by moto in server mode on loopback (127.0.13.10, real HTTP
through boto3) holds the stack's records plus N foreign ones. Fetch is every
page of ListResourceRecordSets; plan is the pure diff plus its three outputs
(text, Markdown, JSON). Target: plan under 2 s once fetched.

    .venv/bin/python bench/plan_bench.py [--records 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))
ADDRESS = "127.0.13.10"  # inside 127.0.0.0/8, which lo carries: nothing to add or remove


def seed(route53, zone_id: str, desired, foreign: int) -> None:
    from tests.conftest import route53_value

    changes = [{"Action": "CREATE", "ResourceRecordSet": {
        "Name": d.records.name, "Type": d.records.type, "TTL": d.records.ttl,
        "ResourceRecords": [{"Value": route53_value(d.records.type, v)} for v in d.records.raw]}} for d in desired]
    changes += [{"Action": "CREATE", "ResourceRecordSet": {
        "Name": f"host{n}.example.com", "Type": "A", "TTL": 300,
        "ResourceRecords": [{"Value": f"198.51.100.{n % 250 + 1}"}]}} for n in range(foreign)]
    for start in range(0, len(changes), 900):  # Route53 takes at most 1,000 values a batch
        route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes[start:start + 900]})


def main() -> None:
    import boto3

    from mailstack.host.plan import Known, stack_plan
    from mailstack.host.plan_output import FORMATS
    from mailstack.infra.route53 import read_zone
    from mailstack.stack.settings import settings_from_values
    from tests.conftest import moto_server, stack_values

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    settings = settings_from_values(stack_values("roster.csv"), source="bench")
    host_ip = Known("203.0.113.7", "bench")
    dkim = Known("v=DKIM1; k=rsa; p=" + "B" * 392, "bench")
    with moto_server(ADDRESS) as endpoint:
        os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true"})
        route53 = boto3.client("route53", region_name="us-east-1", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        zone_id = route53.create_hosted_zone(Name=settings.zone, CallerReference="bench")["HostedZone"]["Id"]
        desired = stack_plan(settings, [], host_ip=host_ip, dkim=dkim).desired
        started = time.perf_counter()
        seed(route53, zone_id, desired, args.records)
        print(f"zone seeded with {args.records} foreign + {len(desired)} stack record sets "
              f"in {time.perf_counter() - started:.1f} s (moto)")
        fetches, plans = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            existing = read_zone(settings.zone)
            fetches.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = stack_plan(settings.model_copy(update={"phase": "cutover"}), existing, host_ip=host_ip, dkim=dkim)
            for output in FORMATS.values():
                output().render(result, "bench")
            plans.append(time.perf_counter() - started)
        assert len(existing) == args.records + len(desired) + 2, len(existing)  # + moto's NS and SOA
        assert [c.records.type for c in result.changes] == ["MX"], result.changes
    fetch, plan = statistics.median(fetches), statistics.median(plans)
    print(f"record sets read: {len(existing)} ({-(-len(existing) // 300)} pages of 300)")
    print(f"fetch (boto3 over HTTP from moto): {fetch:.2f} s  (median of {args.repeat})")
    print(f"plan (diff + text, Markdown, JSON): {plan:.3f} s  (median of {args.repeat}); target < 2 s: "
          f"{'met' if plan < 2 else 'NOT MET'}")


if __name__ == "__main__":
    main()
