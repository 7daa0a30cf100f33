"""``mailstack plan``: what the stack's phase would change in the live Route53 zone, record set by record set."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone
from enum import Enum
from typing import Optional

import typer

from mailstack.cli.common import EXIT_OK, EXIT_PROBLEMS, RequiredStackOption, command, err, fail, load_stack, out

EXIT_CHANGES = 2  # with --detailed-exitcode: the plan has changes


class Phase(str, Enum):
    provision = "provision"
    cutover = "cutover"
    decommission = "decommission"


class Format(str, Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


PLAN_EXIT_CODES = ("Exit codes: 0 done (with --detailed-exitcode: no change); 1 the input has problems, AWS could "
                   "not be read, the zone's records refuse the phase (SPF over 10 lookups, another DKIM key at the "
                   "selector), or the plan is over the safety thresholds without --force (nothing was changed); "
                   "2 wrong usage, or with --detailed-exitcode: the plan has changes.")


def register(app: typer.Typer) -> None:
    # Terraform's convention with --detailed-exitcode: 2 means changes.
    command(app, "plan", plan, PLAN_EXIT_CODES)


def plan(
    stack: str = RequiredStackOption,
    phase: Optional[Phase] = typer.Option(None, "--phase", help="Plan this phase instead of the stack's."),
    output: Format = typer.Option(Format.text, "--format", help="text, markdown (pull-request comment) or json."),
    detailed_exitcode: bool = typer.Option(False, "--detailed-exitcode", help="Exit 2 when the plan has changes."),
    force: bool = typer.Option(False, "--force", help="Accept a plan over the safety thresholds."),
    offline: bool = typer.Option(False, "--offline", help="Do not read AWS: plan against an empty zone, with the "
                                                          "evidence's address (or a stand-in) and a stand-in DKIM key."),
) -> None:
    """Show what applying the stack's phase would change in its Route53 zone.

    Reads the zone (every page) and the host's Elastic IP with boto3
    (AWS_ENDPOINT_URL is honoured), computes the record sets the Pulumi
    program declares, and prints creates, updates and deletes with old and
    new values, TTLs and reasons; hazards first; records the stack does not
    own are listed and never touched. Changes nothing.
    """
    from mailstack.host import plan as dns_plan
    from mailstack.host.plan_output import FORMATS
    from mailstack.migration import lifecycle
    from mailstack.migration.evidence import evidence_path, load_evidence
    from mailstack.problems import InputError

    stack_file, roster = load_stack(stack)
    settings = stack_file.settings
    if phase is not None:
        settings = settings.model_copy(update={"phase": phase.value})
    evidence_file = evidence_path(stack_file.project_dir, stack)
    try:
        evidence = load_evidence(evidence_file)
    except InputError as exc:
        fail(exc)
    shown_evidence = str(evidence_file.relative_to(stack_file.project_dir))
    region = stack_file.region or "eu-west-1"
    existing, live_ip, notes = _read_aws(settings, region, offline)
    verified = evidence.verification.host_ip if evidence and evidence.verification else None
    host_ip = _host_ip(live_ip, verified, shown_evidence, settings.host.name)
    dkim = _dkim_key(stack, stack_file.project_dir, offline)
    gate = lifecycle.phase_gate(settings, evidence, datetime.now(timezone.utc), host_name=settings.host.name,
                                host_ip=None if host_ip.stand_in else host_ip.value, roster=[m.address for m in roster])
    notes = [*notes, lifecycle.outbound_status(settings, evidence)]
    result = dns_plan.stack_plan(settings, existing, host_ip=host_ip, dkim=dkim, notes=notes,
                                 gate_refusals=gate.reasons)
    out.print(FORMATS[output.value]().render(result, stack), markup=False, end="")
    if result.problems:
        for problem in result.problems:
            err.print(f"plan refused: {problem}", markup=False)
        err.print("pulumi up would stop before changing anything: fix the zone or the stack's mailstack:dns settings",
                  markup=False)
        raise typer.Exit(EXIT_PROBLEMS)
    unsafe = result.unsafe_reasons()
    if unsafe and not force:
        for reason in unsafe:
            err.print(f"plan refused as unsafe: {reason}", markup=False)
        err.print("review the changes above; run again with --force to accept them", markup=False)
        raise typer.Exit(EXIT_PROBLEMS)
    raise typer.Exit(EXIT_CHANGES if detailed_exitcode and result.has_changes else EXIT_OK)


def _read_aws(settings, region: str, offline: bool):
    """The zone's record sets, the host's Elastic IP and notes on where they come from."""
    from mailstack.infra import route53

    if offline:
        return [], None, [f"offline: the zone {settings.zone} was not read; every record set shows as a create"]
    try:
        existing = route53.read_zone(settings.zone)
        address = route53.host_address(settings.host.name, region)
    except route53.AwsReadError as exc:
        err.print(f"{exc}\nnothing was planned: give AWS credentials (or AWS_ENDPOINT_URL), or --offline to plan "
                  "against an empty zone", markup=False)
        raise typer.Exit(EXIT_PROBLEMS) from None
    return existing, address, [f"zone {settings.zone} read from Route53: {len(existing)} record sets"]


def _host_ip(live: str | None, verified: str | None, evidence_file: str, host_name: str):
    from mailstack.host.plan import Known
    from mailstack.infra.standins import offline_host_address

    if live:
        return Known(live, f"the Elastic IP tagged {host_name}")
    return Known(*offline_host_address(verified, evidence_file))


def _dkim_key(stack: str, project_dir, offline: bool):
    """The DKIM record value: the stack's published key (``pulumi stack output``), else a labelled stand-in."""
    from mailstack.host.plan import Known
    from mailstack.host.records import dkim_value
    from mailstack.infra.standins import standin_key_pair

    why = "offline"
    if not offline and shutil.which("pulumi"):
        try:
            run = subprocess.run(["pulumi", "stack", "output", "dkim_public_key", "--stack", stack],
                                 cwd=project_dir, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            run, why = None, f"pulumi stack output failed: {exc}"
        if run is not None and run.returncode == 0 and run.stdout.strip():
            return Known(f"v=DKIM1; k=rsa; p={run.stdout.strip()}", "the stack's key (pulumi stack output)")
        if run is not None:
            why = "pulumi stack output gave no key: " + (run.stderr.strip().splitlines() or ["no output"])[-1]
    elif not offline:
        why = "no pulumi CLI to read the stack's key"
    standin = standin_key_pair(f"mailstack-{stack}-dkim")["publicKeyPem"]
    return Known(dkim_value(standin), f"a stand-in derived from the stack name ({why})", stand_in=True)
