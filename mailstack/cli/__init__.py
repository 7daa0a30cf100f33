"""The operations CLI: ``mailstack ...``, one app with one module per command group.

Every module registers its commands with :func:`register`, and every command
shares the options, consoles and exit codes of :mod:`mailstack.cli.common`.
"""

from __future__ import annotations

import typer

from mailstack.cli import backup, clients, local, plan, rehearse, roster, stack, status, sync, verify

app = typer.Typer(help="Move an organisation's mail to a new mail host on AWS, safely.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)

for group in (rehearse, stack, plan, roster, local, sync, backup, verify, status, clients):
    group.register(app)


def main() -> None:
    app()
