"""``mailstack local up/down``: the rendered host, run for real on one loopback address."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import typer

from mailstack.cli.common import EXIT_PROBLEMS, RequiredStackOption, command, err, load_stack, out
from mailstack.files import write_private


def register(app: typer.Typer) -> None:
    local_app = typer.Typer(help="Run the rendered mail host on a loopback address (Postfix, Dovecot, OpenDKIM).",
                            no_args_is_help=True)
    command(local_app, "up", up)
    command(local_app, "down", down)
    app.add_typer(local_app, name="local")


def _problem(message: str) -> None:
    err.print(f"mailstack local: {message}", markup=False)
    raise typer.Exit(EXIT_PROBLEMS)


def up(
    stack: str = RequiredStackOption,
    address: str = typer.Option(..., "--address", help="Loopback address to serve on, e.g. 127.0.2.1 (added if absent)."),
    state: Path = typer.Option(..., "--state", help="JSON file to write: address, ports, CA certificate, a test mailbox."),
) -> None:
    """Start the stack's rendered host on ADDRESS (ports 25, 465, 587, 993, 995) and write STATE."""
    from mailstack.local import host as local
    from mailstack.stack.passwords import initial_password

    stack_file, roster = load_stack(stack)
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
        # Readable by its owner only: it holds a mailbox password.
        write_private(state, json.dumps(document, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        running.stop()
        _problem(f"cannot write {state}: {exc.strerror}; the host was stopped again")
    out.print(f"local host {settings.host.name} up on {address} (ports 25, 465, 587, 993, 995); "
              f"state in {state}; stop it with: mailstack local down --state {state}", markup=False)


def down(state: Path = typer.Option(..., "--state", help="The state file `mailstack local up` wrote.")) -> None:
    """Stop the local host of STATE and remove what it added (files, loopback address)."""
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
