"""``mailstack check`` and ``mailstack preview``: a stack validated, and the program evaluated offline."""

from __future__ import annotations

import json

import typer

from mailstack.cli.common import EXIT_PROBLEMS, JsonOption, RequiredStackOption, command, err, fail, load_stack, out


def register(app: typer.Typer) -> None:
    command(app, "check", check)
    command(app, "preview", preview)


def check(stack: str = RequiredStackOption) -> None:
    """Validate a stack's settings and its roster, changing nothing."""
    stack_file, roster = load_stack(stack)
    settings = stack_file.settings
    out.print(f"stack {stack}: settings valid; roster {settings.roster}: {len(roster)} mailboxes; "
              f"phase {settings.phase}", markup=False)


def preview(stack: str = RequiredStackOption, as_json: bool = JsonOption) -> None:
    """Evaluate the Pulumi program offline (Pulumi's mock engine) and show what it would declare.

    No AWS call is made and nothing is changed: ids and addresses that AWS
    would assign are stand-ins. Use `pulumi preview -s ENV` for the real diff.
    """
    import pulumi

    from mailstack.infra.offline import evaluate, stack_config
    from mailstack.infra.preview import summary
    from mailstack.infra.standins import offline_host_address
    from mailstack.migration.evidence import evidence_path, load_evidence
    from mailstack.problems import InputError

    stack_file, _ = load_stack(stack)
    config, secrets = stack_config(stack_file.path)
    evidence_file = evidence_path(stack_file.project_dir, stack)
    try:
        evidence = load_evidence(evidence_file)
    except InputError as exc:
        fail(exc)
    verified = evidence.verification.host_ip if evidence and evidence.verification else None
    # The host's address as the cutover gate will see it: the verified one, else a labelled stand-in.
    address, source, _ = offline_host_address(verified, str(evidence_file.relative_to(stack_file.project_dir)))
    region = stack_file.region or "eu-west-1"
    eips = {"aws:ec2/getEips:getEips": {"publicIps": [address], "allocationIds": ["eipalloc-offline"], "id": region}}
    try:
        evaluation = evaluate(config, project_dir=stack_file.project_dir, stack=stack, secret_keys=secrets,
                              region=region, lookups=eips, host_ip=address)
    except pulumi.RunError as exc:
        err.print(f"stack {stack}: {exc}", markup=False)
        raise typer.Exit(EXIT_PROBLEMS) from None
    report = summary(evaluation)
    report["stand_ins"] = [f"host address {address}: {source}",
                           "DKIM key: a stand-in derived from the stack name (pulumi-tls makes the real one)"]
    if as_json:
        out.print_json(json.dumps(report))
        return
    _print_preview(stack, report)


def _print_preview(stack: str, report: dict) -> None:
    from rich.table import Table

    out.print(f"[bold]mailstack preview -s {stack}[/bold]  (offline: Pulumi mock engine, no AWS calls)")
    table = Table("resource", "name", "what matters", title=f"{report['resource_count']} resources")
    for row in report["resources"]:
        table.add_row(row["type"], row["name"], row["detail"])
    out.print(table)
    dns = Table("name", "type", "value", "ttl", "why", title=f"DNS records of the {report['outputs']['phase']} phase")
    for rec in report["outputs"]["dns_records"]:
        dns.add_row(rec["name"], rec["type"], " ".join(rec["values"]), str(rec["ttl"]), rec["reason"])
    out.print(dns)
    facts = report["facts"]
    out.print(f"ports open to the internet: {', '.join(map(str, facts['open_ports']))}")
    out.print(f"user-data: {facts['user_data_bytes']} bytes (EC2 limit 16384); "
              f"bundle: {facts['bundle_bytes']} bytes, version {report['outputs']['bundle_version']}, "
              f"{report['outputs']['mailboxes']} mailboxes")
    for stand_in in report["stand_ins"]:
        out.print(f"offline: {stand_in}", markup=False)
    out.print(f"[bold]next step:[/bold] {report['outputs']['next_step']}")
