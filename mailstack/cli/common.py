"""What every typer command shares: consoles, options, registration; and, from :mod:`mailstack.cli.basics`, exit
codes, usage errors and the inputs of a run."""

from __future__ import annotations

import functools
from typing import Callable

import typer
from rich.console import Console

from mailstack.cli.basics import (  # noqa: F401  (re-exported for the commands)
    ACCOUNTS_ENV, EXIT_CODES, EXIT_FAILED, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, HELP, UsageError, default_state_dir,
    duration, fail, folder_rules, imap_endpoint, load_stack, print_json, read_accounts, record_evidence,
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

StackOption = typer.Option(None, "-s", "--stack", help=HELP["stack"])
RequiredStackOption = typer.Option(..., "-s", "--stack", help=HELP["stack"])
AccountsOption = typer.Option(None, "--accounts", envvar=ACCOUNTS_ENV, show_envvar=True, help=HELP["accounts"])
CafileOption = typer.Option(None, "--cafile", help=HELP["cafile"])
IncludeOption = typer.Option([], "--include", help=HELP["include"])
ExcludeOption = typer.Option([], "--exclude", help=HELP["exclude"])
JsonOption = typer.Option(False, "--json", help=HELP["json"])
MaxMessageOption = typer.Option(64, "--max-message-size", min=1, max=4096, metavar="MIB",
                                help=HELP["max_message_size"])
DeadlineOption = typer.Option(None, "--deadline", metavar="DURATION", help=HELP["deadline"])
MailboxDeadlineOption = typer.Option("6h", "--mailbox-deadline", metavar="DURATION", help=HELP["mailbox_deadline"])
MapInvalidOption = typer.Option(False, "--map-invalid", help=HELP["map_invalid"])


def command(app: typer.Typer, name: str, function: Callable, exit_codes: str = EXIT_CODES) -> None:
    """Register ``function`` as ``name``; every command's --help ends with its exit codes, and a
    :class:`UsageError` it raises is typer's usage error on that option (exit 2)."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except UsageError as exc:
            raise typer.BadParameter(exc.message, param_hint=exc.option) from None

    app.command(name, epilog=exit_codes)(run)
