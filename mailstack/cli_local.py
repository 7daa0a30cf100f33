"""``mailstack local up/down``: the rendered host, run for real on one loopback address."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import typer

local_app = typer.Typer(help="Run the rendered mail host on a loopback address (Postfix, Dovecot, OpenDKIM).",
                        no_args_is_help=True)


def _problem(message: str) -> None:
    # Imported here: mailstack.cli imports this module to register it.
    from mailstack.console import EXIT_PROBLEMS, err

    err.print(f"mailstack local: {message}", markup=False)
    raise typer.Exit(EXIT_PROBLEMS)


def _write_private(path: Path, document: dict) -> None:
    """Write the state file readable by its owner only: it holds a mailbox password."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=2, sort_keys=True)
        handle.write("\n")


@local_app.command("up")
def up(
    stack: str = typer.Option(..., "-s", "--stack", help="Stack (environment) name."),
    address: str = typer.Option(..., "--address", help="Loopback address to serve on, e.g. 127.0.2.1 (added if absent)."),
    state: Path = typer.Option(..., "--state", help="JSON file to write: address, ports, CA certificate, a test mailbox."),
) -> None:
    """Start the stack's rendered host on ADDRESS (ports 25, 465, 587, 993, 995) and write STATE."""
    from mailstack.console import _load_stack, out
    from mailstack.local import host as local
    from mailstack.passwords import initial_password

    stack_file, roster = _load_stack(stack)
    settings = stack_file.settings
    roster, mailbox = local.with_test_mailbox(roster, settings.primary_domain)
    # A new seed per run: the generated passwords of a local run are its own.
    seed = secrets.token_urlsafe(32)
    try:
        running = local.start(settings, roster, address=address, password_seed=seed)
    except local.LocalHostError as exc:
        _problem(str(exc))
    document = {
        "address": address,
        "ports": dict(local.PORTS),
        "ca_cert": str(running.ca_cert),
        "domain": settings.primary_domain,
        "host": settings.host.name,
        "mailbox": {"address": mailbox.address, "password": initial_password(seed, mailbox.address, mailbox.password.version)},
        "root": str(running.root),
        "added_address": running.added_address,
        "logs": str(running.log_dir),
    }
    try:
        _write_private(state, document)
    except OSError as exc:
        running.stop()
        _problem(f"cannot write {state}: {exc.strerror}; the host was stopped again")
    out.print(f"local host {settings.host.name} up on {address} (ports 25, 465, 587, 993, 995); "
              f"state in {state}; stop it with: mailstack local down --state {state}", markup=False)


@local_app.command("down")
def down(state: Path = typer.Option(..., "--state", help="The state file `mailstack local up` wrote.")) -> None:
    """Stop the local host of STATE and remove what it added (files, loopback address)."""
    from mailstack.console import out
    from mailstack.local import host as local

    try:
        document = json.loads(state.read_text())
        running = local.LocalHost(Path(document["root"]), document["address"], document["added_address"], document["host"])
    except (OSError, ValueError, KeyError) as exc:
        _problem(f"{state} is not a state file written by mailstack local up ({exc})")
    if os.geteuid() != 0:
        _problem("stopping a local host needs root, as starting it did: run it with sudo")
    problems = running.stop()
    if problems:
        _problem("; ".join(problems))
    state.unlink()
    out.print(f"local host on {running.address} stopped and removed", markup=False)
