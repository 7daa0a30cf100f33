"""`mailstack rehearse` end to end: the whole migration on loopback, its report, and its clean-up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mailstack.rehearsal.world import BLOCK_BASE
from tests.conftest import PROJECT, require_root_and_packages, require_tool

pytestmark = pytest.mark.integration

MAILSTACK = [sys.executable, "-m", "mailstack.cli"]


def rehearsal_addresses() -> list[str]:
    shown = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout
    return [line.split()[3] for line in shown.splitlines() if f" {BLOCK_BASE}" in line]


def rehearsal_processes() -> list[str]:
    """Daemons whose command line names a rehearsal's files or addresses."""
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in ps if BLOCK_BASE in line or "mailstack-rehearsal" in line]


@pytest.fixture(scope="module")
def ready():
    require_root_and_packages()
    require_tool("knotd")
    assert rehearsal_addresses() == [], "a rehearsal's addresses are already on lo"


def test_a_small_rehearsal_passes_every_step_and_loses_nothing(ready):
    run = subprocess.run([*MAILSTACK, "rehearse", "-s", "dev", "--messages", "120", "--json"], cwd=PROJECT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["ok"] and all(step["ok"] for step in report["steps"])
    names = [step["step"] for step in report["steps"]]
    for expected in ("backup", "sync", "verify --record", "cutover: MX flip", "straggler sync", "rollback: reverse sync",
                     "final sync", "old and new compared"):
        assert expected in names
    comparison = report["comparison"]
    assert (comparison["lost"], comparison["duplicated"], comparison["flags_differ"], comparison["dates_differ"]) == (
        0, 0, 0, 0)
    assert sum(box["old_messages"] for box in comparison["mailboxes"]) >= 120
    gates = [(g["gate"], g["allowed"]) for g in report["gates"]]
    assert gates[0] == ("cutover", False) and "previous TTL" in report["gates"][0]["reasons"][0]
    assert ("cutover", True) in gates and ("decommission", False) in gates and gates[-1] == ("decommission", True)
    assert all(g["as_expected"] for g in report["gates"])
    # The stack's own evidence is never touched by a rehearsal.
    assert not (PROJECT / "stacks/evidence/dev.json").exists() or "rehearsal" not in (
        PROJECT / "stacks/evidence/dev.json").read_text()
    assert rehearsal_addresses() == [] and rehearsal_processes() == []


def test_an_interrupted_rehearsal_leaves_nothing_running(ready):
    # Enough mail that the sync is still copying when the interrupt comes (1,000 took 1 s: a busy machine could
    # let it end first). SIGINT as an operator's Ctrl-C delivers it, whatever started the tests: a shell's
    # background job, say, ignores it, and the rehearsal would inherit that.
    process = subprocess.Popen([*MAILSTACK, "rehearse", "-s", "dev", "--messages", "2500"], cwd=PROJECT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    try:
        for line in process.stderr:
            seen.append(line)
            if line.startswith("… sync"):
                break
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        seen += process.stderr.readlines()  # to the end: every daemon of a rehearsal writes to its own log
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert any(line.startswith("… sync") for line in seen), "".join(seen)
    assert not any(line.startswith("ok  sync") for line in seen), "the sync ended before the interrupt"
    assert process.returncode != 0
    assert rehearsal_addresses() == []
    assert rehearsal_processes() == []
    roots = os.listdir("/run/mailstack-local") if os.path.isdir("/run/mailstack-local") else []
    assert not [name for name in roots if name.startswith(BLOCK_BASE)]


def test_without_root_the_rehearsal_says_what_is_missing_before_starting_anything(ready):
    run = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *MAILSTACK, "rehearse",
                          "--messages", "10"], cwd=PROJECT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert run.returncode == 1
    assert "mailstack rehearse needs root" in run.stderr and "Traceback" not in run.stderr
    assert rehearsal_addresses() == []

