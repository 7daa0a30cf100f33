"""What every mailstack command shares: the consoles, the input-problem exit, loading a stack."""

from __future__ import annotations

import typer
from rich.console import Console

from mailstack.problems import InputError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_PROBLEMS = 1


def _fail(exc: InputError) -> None:
    err.print(exc.report(), markup=False)
    raise typer.Exit(EXIT_PROBLEMS)


def _load_stack(stack: str):
    """A stack's file, settings and roster, validated; exits 1 with every problem."""
    from mailstack.roster import load_roster
    from mailstack.settings import load_stack_file

    try:
        stack_file = load_stack_file(stack)
        settings = stack_file.settings
        roster = load_roster(stack_file.resolve(settings.roster), domains=settings.domains,
                             default_quota=settings.default_quota)
    except InputError as exc:
        _fail(exc)
    return stack_file, roster
