"""The typer app: each command group registers itself from its module; ``sync`` is handed its arguments."""

from __future__ import annotations

import typer

from mailstack.cli import backup, clients, local, plan, rehearse, roster, stack, status, sync, verify
from mailstack.cli.common import EXIT_CODES

app = typer.Typer(help="Move an organisation's mail to a new mail host on AWS, safely.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


def _sync(context: typer.Context) -> None:
    """``mailstack sync`` parses its own options (see :mod:`mailstack.cli.sync`): the same run from here."""
    raise typer.Exit(sync.main(context.args))


def _register_sync(app: typer.Typer) -> None:
    app.command("sync", help=sync.SUMMARY, epilog=EXIT_CODES, add_help_option=False,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(_sync)


for register in (rehearse.register, stack.register, plan.register, roster.register, local.register, _register_sync,
                 backup.register, verify.register, status.register, clients.register):
    register(app)
