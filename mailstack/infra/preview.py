"""What an offline evaluation declared, summarised for a person (pure)."""

from __future__ import annotations

from mailstack.infra.offline import Evaluation, is_secret, reveal
from mailstack.infra.program import SECRET_OUTPUTS


def _plain(value):
    """Recorded inputs pass through protobuf, where every number is a float."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def short_type(typ: str) -> str:
    """``aws:ec2/instance:Instance`` -> ``ec2.Instance``."""
    package, module, name = (typ.split(":") + ["", ""])[:3]
    group = module.split("/")[0]
    return f"{package if group == 'index' else group}.{name}"


def _detail(typ: str, inputs: dict, options: dict) -> str:
    data = _plain(reveal(inputs))
    if typ == "aws:ec2/instance:Instance":
        meta = data.get("metadataOptions", {})
        root = data.get("rootBlockDevice", {})
        return (f"{data.get('instanceType')}, IMDSv2 {meta.get('httpTokens')}, "
                f"root {root.get('volumeSize')} GB encrypted={root.get('encrypted')} protect={options.get('protect')}")
    if typ == "aws:ec2/volumeAttachment:VolumeAttachment":
        return f"{data.get('deviceName')}, delete before replace={options.get('delete_before_replace')}"
    if typ == "aws:kms/key:Key":
        return f"rotation={data.get('enableKeyRotation')}"
    if typ == "aws:ebs/volume:Volume":
        return f"{data.get('size')} GB {data.get('type')} encrypted={data.get('encrypted')} protect={options.get('protect')}"
    if typ == "aws:ec2/securityGroup:SecurityGroup":
        return "ingress tcp " + ", ".join(str(r["fromPort"]) for r in data.get("ingress", []))
    if typ == "aws:s3/bucketObjectv2:BucketObjectv2":
        return f"key {data.get('key')}, content secret={is_secret(inputs.get('content'))}"
    if typ == "aws:route53/record:Record":
        return f"{data.get('name')} {data.get('type')} {' '.join(data.get('records', []))}"
    if typ == "aws:sesv2/emailIdentity:EmailIdentity":
        return f"{data.get('emailIdentity')}: sends through SES once its Easy DKIM CNAMEs resolve"
    if typ == "aws:ec2/eipDomainName:EipDomainName":
        return f"PTR -> {data.get('domainName')}"
    if typ == "aws:dlm/lifecyclePolicy:LifecyclePolicy":
        schedule = data["policyDetails"]["schedules"][0]
        return f"daily at {schedule['createRule']['times']} UTC, keep {schedule['retainRule']['count']}"
    return ""


def summary(evaluation: Evaluation) -> dict:
    """Resources, outputs and the facts an operator checks before ``pulumi up``."""
    resources = evaluation.custom
    # The new host: an adopted old server (imported) is an Instance too.
    (instance,) = [r for r in evaluation.of_type("aws:ec2/instance:Instance") if not r.options.get("import_id")]
    bundle = evaluation.one("aws:s3/bucketObjectv2:BucketObjectv2")
    group = evaluation.one("aws:ec2/securityGroup:SecurityGroup")
    return {
        "resource_count": len(resources),
        "resources": [
            {"type": short_type(r.type), "name": r.name, "detail": _detail(r.type, r.inputs, r.options)}
            for r in sorted(resources, key=lambda r: (r.type, r.name))
        ],
        # Secret outputs are shown as Pulumi shows them without --show-secrets.
        "outputs": {k: "[secret]" if k in SECRET_OUTPUTS else v for k, v in evaluation.outputs.items()},
        "facts": {
            "open_ports": sorted(int(rule["fromPort"]) for rule in group.inputs.get("ingress", [])),
            "user_data_bytes": len(instance.inputs["userData"].encode()),
            "bundle_bytes": len(reveal(bundle.inputs["content"]).encode()),
        },
    }
