"""The operations CLI: ``mailstack ...``, one app with one module per command group.

Every module registers its commands with the typer app (:mod:`mailstack.cli.commands`), and shares the options,
consoles and exit codes of :mod:`mailstack.cli.common`. ``mailstack sync``, the run repeated all through the
overlap, goes straight to :mod:`mailstack.cli.sync` (argparse): it starts without loading typer, rich or pydantic.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["sync"]:
        from mailstack.cli import sync

        raise SystemExit(sync.main(sys.argv[2:]))
    from mailstack.cli.commands import app

    app()


def __getattr__(name: str):
    if name == "app":  # ``from mailstack.cli import app``: the typer app, loaded when asked for
        from mailstack.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
