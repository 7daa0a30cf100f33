"""The mailstack Pulumi program: see mailstack/infra/program.py."""

from mailstack.infra.program import run

run()
