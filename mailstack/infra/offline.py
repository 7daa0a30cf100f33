"""Evaluate the Pulumi program offline, under Pulumi's mock engine.

Used by the tests and by ``mailstack preview``: the real program runs
in-process, every resource it declares is recorded with its inputs and
options, and no cloud API is called. Provider-computed values (ids,
addresses) are stand-ins from documentation ranges.
"""

from __future__ import annotations

import asyncio

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

from mailstack.infra.standins import STANDIN_HOST_IP, standin_key_pair

SECRET_SIG = rpc._special_secret_sig  # marks a secret value in recorded inputs
SIG_KEY = rpc._special_sig_key


def is_secret(value: Any) -> bool:
    """True when a recorded input value is a Pulumi secret."""
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def reveal(value: Any) -> Any:
    """A recorded input with secret markers removed (for inspection)."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


@dataclass
class Declared:
    """One resource the program declared."""

    type: str
    name: str
    inputs: dict
    options: dict = field(default_factory=dict)


def _fake_id(kind: str, name: str) -> str:
    return f"{kind}-{hashlib.sha256(name.encode()).hexdigest()[:17]}"


def default_subnet_id(zone: str) -> str:
    """The stand-in id of the default VPC's subnet in a zone."""
    return _fake_id("subnet", zone)


OLD_SERVER_STANDIN = {"ami": "ami-0aa0bb0cc0dd0ee0f", "instanceType": "t3.medium",
                      "subnetId": "subnet-0a1b2c3d4e5f60718", "availabilityZone": "eu-west-1a", "tags": {},
                      "rootBlockDevices": [{"volumeId": "vol-0old0000000000001", "deviceName": "/dev/xvda"}],
                      "ebsBlockDevices": [{"volumeId": "vol-0old0000000000002", "deviceName": "/dev/sdf"}]}


@dataclass
class Account:
    """What exists in the AWS account before the run, for the program's lookups.

    ``instances`` maps an instance id to its description (``ami``, ``subnetId``,
    ``availabilityZone``, ``tags``, ``state``...); ``None`` stands for an
    account where any instance id asked for by id is an old server (the
    stand-in above) and no host runs yet. ``volumes`` maps a volume id to
    ``availabilityZone`` and ``tags``; ``subnets`` a subnet id to its zone.
    """

    instances: dict[str, dict] | None = None
    volumes: dict[str, dict] = field(default_factory=dict)
    subnets: dict[str, str] = field(default_factory=dict)

    def instance(self, instance_id: str) -> dict | None:
        if self.instances is None:
            return dict(OLD_SERVER_STANDIN, state="running")
        return self.instances.get(instance_id)


def _filters(args: dict) -> dict[str, list[str]]:
    return {f["name"]: list(f["values"]) for f in args.get("filters") or []}


class RecordingMocks(pulumi_mocks.Mocks):
    """Mocks that record resources and answer lookups with plausible values."""

    def __init__(self, region: str = "eu-west-1", lookups: dict[str, dict] | None = None,
                 host_ip: str = STANDIN_HOST_IP, account: Account | None = None):
        self.region = region
        self.host_ip = host_ip
        self.lookups = lookups or {}
        self.account = account or Account()
        self.resources: list[Declared] = []
        self.calls: list[tuple[str, dict]] = []

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        self.resources.append(Declared(args.typ, args.name, args.inputs))
        state = dict(args.inputs)
        typ, name = args.typ, args.name
        prefix = {"aws:ec2/instance:Instance": "i", "aws:ebs/volume:Volume": "vol",
                  "aws:ec2/securityGroup:SecurityGroup": "sg", "aws:ec2/eip:Eip": "eipalloc"}.get(typ, "id")
        resource_id = _fake_id(prefix, name)
        if typ == "aws:ec2/eip:Eip":
            state.update(public_ip=self.host_ip, allocation_id=resource_id)
        elif typ == "aws:s3/bucket:Bucket":
            bucket = args.inputs.get("bucketPrefix", "bucket-") + "20261123000000000000000001"
            resource_id = bucket
            state.update(bucket=bucket, arn=f"arn:aws:s3:::{bucket}")
        elif typ in ("aws:iam/role:Role",):
            state.update(arn=f"arn:aws:iam::123456789012:role/{name}", name=name)
        elif typ == "aws:iam/instanceProfile:InstanceProfile":
            state.update(arn=f"arn:aws:iam::123456789012:instance-profile/{name}", name=name)
        elif typ == "aws:kms/key:Key":
            key_id = _fake_id("key", name)[4:]
            resource_id = key_id
            state.update(keyId=key_id, arn=f"arn:aws:kms:{self.region}:123456789012:key/{key_id}")
        elif typ == "aws:ssm/parameter:Parameter":
            state.update(arn=f"arn:aws:ssm:{self.region}:123456789012:parameter{args.inputs['name']}")
        elif typ == "random:index/randomPassword:RandomPassword":
            state["result"] = hashlib.sha256(name.encode()).hexdigest()[:48]
        elif typ == "tls:index/privateKey:PrivateKey":
            # Derived from the name (which holds the stack's): the same commit previews the same bundle.
            state.update(standin_key_pair(name))
        elif typ == "aws:sesv2/emailIdentity:EmailIdentity":
            identity = args.inputs["emailIdentity"]
            tokens = [hashlib.sha256(f"{identity}-{n}".encode()).hexdigest()[:32] for n in range(3)]
            state.update(arn=f"arn:aws:ses:{self.region}:123456789012:identity/{identity}",
                         dkimSigningAttributes={"tokens": tokens}, identityType="DOMAIN")
        elif typ == "aws:iam/user:User":
            state.update(arn=f"arn:aws:iam::123456789012:user{args.inputs.get('path', '/')}{name}", name=name)
        elif typ == "aws:iam/accessKey:AccessKey":
            resource_id = "AKIA" + hashlib.sha256(name.encode()).hexdigest()[:16].upper()
            # Stand-ins a provider would compute from the new key: never a real credential.
            state.update(secret=hashlib.sha256(f"{name}-secret".encode()).hexdigest(),
                         sesSmtpPasswordV4="B" + hashlib.sha256(f"{name}-smtp".encode()).hexdigest()[:43])
        elif typ == "aws:ec2/eipDomainName:EipDomainName":
            state["ptrRecord"] = args.inputs.get("domainName", "") + "."
        return resource_id, state

    def call(self, args: pulumi_mocks.MockCallArgs):
        self.calls.append((args.token, dict(args.args)))
        token = args.token
        if token in self.lookups:
            return self.lookups[token], []
        if token == "aws:index/getRegion:getRegion":
            return {"region": self.region, "name": self.region, "id": self.region}, []
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": [f"{self.region}a", f"{self.region}b"], "zoneIds": ["euw1-az1", "euw1-az2"]}, []
        if token == "aws:ec2/getVpc:getVpc":
            return {"id": "vpc-0a1b2c3d4e5f60718", "cidrBlock": "172.31.0.0/16"}, []
        if token == "aws:ec2/getSubnet:getSubnet":
            subnet = args.args.get("id")
            if subnet:
                zone = self.account.subnets.get(subnet, f"{self.region}a")
            else:
                zone = args.args.get("availabilityZone") or f"{self.region}a"
                subnet = default_subnet_id(zone)
            return {"id": subnet, "vpcId": "vpc-0a1b2c3d4e5f60718", "availabilityZone": zone}, []
        if token == "aws:ec2/getAmi:getAmi":
            return {"id": "ami-0d4e9f4b1e2f3a4b5", "name": "debian-12-amd64-20261101-1234"}, []
        if token == "aws:ec2/getEips:getEips":
            return {"publicIps": [], "allocationIds": [], "id": self.region}, []
        if token == "aws:route53/getRecords:getRecords":
            return {"resourceRecordSets": [], "zoneId": args.args.get("zoneId"), "id": "records"}, []
        if token == "aws:ec2/getInstances:getInstances":
            return {"ids": self._instance_ids(args.args), "id": self.region}, []
        if token == "aws:ec2/getInstance:getInstance":
            instance = args.args["instanceId"]
            found = self.account.instance(instance)
            if found is None:
                raise Exception(f"Your query returned no results (instance {instance})")  # as the provider does
            return {"rootBlockDevices": [], "ebsBlockDevices": [], **found, "id": instance, "instanceId": instance}, []
        if token == "aws:ebs/getEbsVolumes:getEbsVolumes":
            wanted = args.args.get("tags") or {}
            ids = [v for v, info in sorted(self.account.volumes.items())
                   if wanted.items() <= (info.get("tags") or {}).items()]
            return {"ids": ids, "id": self.region}, []
        if token == "aws:ebs/getVolume:getVolume":
            (volume,) = _filters(args.args)["volume-id"]
            return {**self.account.volumes[volume], "id": volume, "volumeId": volume}, []
        if token == "aws:ebs/getSnapshotIds:getSnapshotIds":
            return {"ids": [], "id": "snapshots"}, []
        if token == "aws:route53/getZone:getZone":
            return {"zoneId": "Z0123456789ABCDEFGHIJ", "name": args.args.get("name")}, []
        raise NotImplementedError(f"no offline answer for {token}")

    def _instance_ids(self, args: dict) -> list[str]:
        """``getInstances``: instances matching the id filter, the tags and the states asked for."""
        states = args.get("instanceStateNames") or ["running"]
        by_id = _filters(args).get("instance-id")
        if self.account.instances is None:
            return list(by_id or [])  # the stand-in account: the old server exists, no host runs yet
        tags = args.get("instanceTags") or {}
        return [i for i, info in sorted(self.account.instances.items())
                if (by_id is None or i in by_id) and info.get("state", "running") in states
                and tags.items() <= (info.get("tags") or {}).items()]


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, also recording each resource's options (protect, ignoreChanges...)."""

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            for declared in reversed(self.mocks.resources):
                if declared.type == request.type and declared.name == request.name:
                    declared.options = {
                        "protect": request.protect,
                        "ignore_changes": list(request.ignoreChanges),
                        "depends_on": list(request.dependencies),
                        "parent": request.parent,
                        "custom": request.custom,
                        "import_id": request.importId,
                        "retain_on_delete": request.retainOnDelete,
                        "delete_before_replace": request.deleteBeforeReplace,
                        "custom_timeouts": {"create": request.customTimeouts.create,
                                            "update": request.customTimeouts.update,
                                            "delete": request.customTimeouts.delete},
                    }
                    break
        return response


@dataclass
class Evaluation:
    """What one offline run of the program declared and exported."""

    resources: list[Declared]
    outputs: dict
    calls: list[tuple[str, dict]]

    def of_type(self, typ: str) -> list[Declared]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str) -> Declared:
        found = self.of_type(typ)
        if len(found) != 1:
            raise AssertionError(f"expected one {typ}, found {len(found)}")
        return found[0]

    @property
    def custom(self) -> list[Declared]:
        """Resources a provider would create (components left out)."""
        return [r for r in self.resources if r.options.get("custom", True) and not r.type.startswith("mailstack:")]


def stack_config(stack_file: Path) -> tuple[dict[str, str], list[str]]:
    """Pulumi config of a stack file as the engine hands it to a program (JSON for objects)."""
    import yaml

    config = (yaml.safe_load(stack_file.read_text(encoding="utf-8")) or {}).get("config") or {}
    values, secrets = {}, []
    for key, value in config.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            # Encrypted with the stack's secrets provider, which needs the CLI:
            # stand in a placeholder, still flagged as a secret.
            values[key] = "offline-placeholder-secret"
            secrets.append(key)
        else:
            values[key] = value if isinstance(value, str) else json.dumps(value)
    return values, secrets


def evaluate(config: dict[str, str], *, project_dir: Path, stack: str = "dev", secret_keys: list[str] | None = None,
             region: str = "eu-west-1", lookups: dict[str, dict] | None = None,
             host_ip: str = STANDIN_HOST_IP, account: Account | None = None, now=None) -> Evaluation:
    """Run the program once under mocks with this config; return what it declared.

    ``lookups`` answers provider functions by token, standing in for what
    exists in the account (an Elastic IP, records in the zone...);
    ``host_ip`` is the address the host's Elastic IP gets; ``account`` what
    instances, volumes and subnets exist; ``now`` the program's clock. Raises
    whatever the program raises (``pulumi.RunError`` on bad input).
    """
    from mailstack.infra import program

    # Pulumi's mocks run on the thread's current event loop; an earlier asyncio.run() (a sync in the
    # same process) leaves none behind.
    asyncio.set_event_loop(asyncio.new_event_loop())
    mocks = RecordingMocks(region, lookups, host_ip, account)
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="mailstack", stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(dict(config, **{"aws:region": region}), secret_keys or [])
    resolved: dict = {}

    @pulumi.runtime.test
    def run_program():
        outputs = program.run(project_dir, now=now)
        keys = list(outputs)
        return pulumi.Output.all(*[outputs[k] for k in keys]).apply(
            lambda values: resolved.update(zip(keys, values))
        )

    run_program()
    return Evaluation(mocks.resources, resolved, mocks.calls)
