"""``mailstack rehearse``: the whole migration on this machine, with real servers on loopback, then its report."""

from __future__ import annotations

import signal
from typing import Optional

import typer

from mailstack.cli.common import EXIT_FAILED, EXIT_PROBLEMS, JsonOption, command, err, load_stack, out, print_json


def register(app: typer.Typer) -> None:
    command(app, "rehearse", rehearse)


def rehearse(
    stack: str = typer.Option("dev", "-s", "--stack", help="Stack (environment) to rehearse, as in stacks/Pulumi.<env>.yaml."),
    mailboxes: Optional[int] = typer.Option(None, "--mailboxes", min=1, help="Only the roster's first N mailboxes."),
    messages: int = typer.Option(2000, "--messages", min=1, help="Messages generated on the old server, over all mailboxes."),
    keep: bool = typer.Option(False, "--keep", help="Leave the servers running at the end (to look around)."),
    as_json: bool = JsonOption,
) -> None:
    """Rehearse the migration: old server, new host and DNS on loopback; backup, sync, verify, the MX flip,
    stragglers, a rollback, the overlap and the decommission gate, each gate decided on real evidence.

    Changes nothing outside this machine and never touches the stack's evidence file. Needs root and the
    Debian packages scripts/bootstrap installs.
    """
    from mailstack.rehearsal.run import Options, rehearse as run
    from mailstack.local.host import LocalHostError
    from mailstack.rehearsal.world import RehearsalRefused, missing_requirements

    missing = missing_requirements()
    if missing:
        err.print("mailstack rehearse needs " + "; ".join(missing), markup=False)
        raise typer.Exit(EXIT_PROBLEMS)
    stack_file, roster = load_stack(stack)

    def show(line: str) -> None:
        err.print(line, markup=False, highlight=False)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    # A terminated rehearsal cleans up as an interrupted one does (the servers stop, the addresses go).
    signal.signal(signal.SIGTERM, interrupted)

    try:
        report = run(stack_file.settings, roster, stack, Options(mailboxes=mailboxes, messages=messages), show,
                     keep=keep)
    except (RehearsalRefused, LocalHostError) as exc:
        err.print(f"mailstack rehearse: {exc}", markup=False)
        raise typer.Exit(EXIT_PROBLEMS) from None
    except KeyboardInterrupt:
        err.print("mailstack rehearse: interrupted; the servers were stopped and their addresses removed",
                  markup=False)
        raise typer.Exit(130) from None
    data = report.to_dict()
    if as_json:
        print_json(data, default=str)
    else:
        print_report(data)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def print_report(data: dict) -> None:
    from rich.table import Table

    steps = Table("step", "result", "seconds", "what it did", title=f"mailstack rehearse -s {data['stack']}")
    for step in data["steps"]:
        steps.add_row(step["step"], "ok" if step["ok"] else "FAILED", f"{step['seconds']:.1f}", step["detail"])
    out.print(steps)
    gates = Table("gate", "rehearsal clock", "decision", "expected", "reasons", title="gates")
    for gate in data["gates"]:
        gates.add_row(gate["gate"], gate["at"][:16].replace("T", " "), "allowed" if gate["allowed"] else "refused",
                      "yes" if gate["as_expected"] else "NO", "; ".join(gate["reasons"]))
    out.print(gates)
    compared = Table("mailbox", "old", "new", "lost", "duplicated", "flags/dates differ", "only on new",
                     title="old and new compared")
    for box in data["comparison"]["mailboxes"]:
        compared.add_row(box["mailbox"], str(box["old_messages"]), str(box["new_messages"]), str(box["lost"]),
                         str(box["duplicated"]), str(box["flags_differ"] + box["dates_differ"]), str(box["only_on_new"]))
    out.print(compared)
    verdict = "every step ok, no message lost or duplicated" if data["ok"] else "NOT ok: see the rows above"
    out.print(f"rehearsal {verdict}; {data['seconds']:.1f} s in all", markup=False)
