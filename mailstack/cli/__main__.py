"""``python -m mailstack.cli``: the same as the ``mailstack`` command."""

from mailstack.cli import main

main()
