"""Benchmark: evaluate the Pulumi program under mocks with 5 and with 5,000 mailboxes.

Each size runs in a fresh process (as `pulumi up` would), timed from process
start to the end of the evaluation, and is also timed in-process for the
program alone. Prints resource counts and times; the target is the same
resource count for both sizes and under 3 s for 5,000 mailboxes.

    .venv/bin/python bench/program_eval.py [--sizes 5,5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

CHILD = """
import json, sys, time
started = time.perf_counter()
from pathlib import Path
from mailstack.infra.offline import evaluate
imported = time.perf_counter()
config = json.loads(sys.argv[1])
evaluation = evaluate(config, project_dir=Path(sys.argv[2]), stack="bench")
done = time.perf_counter()
print(json.dumps({"resources": len(evaluation.custom), "import_s": imported - started,
                  "evaluate_s": done - imported, "mailboxes": evaluation.outputs["mailboxes"]}))
"""


def run_once(config: dict) -> dict:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config), str(PROJECT)],
                            capture_output=True, text=True, check=True, cwd=PROJECT)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    figures["process_s"] = time.perf_counter() - started
    return figures


def main() -> None:
    from tests.conftest import pulumi_config, stack_values, write_roster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,5000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'mailboxes':>9} {'resources':>9} {'process s':>10} {'import s':>9} {'evaluate s':>10}  (median of {args.repeat})")
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            roster = write_roster(Path(tmp) / f"roster-{size}.csv", size)
            config = pulumi_config(stack_values(roster))
            runs = [run_once(config) for _ in range(args.repeat)]
            assert all(r["mailboxes"] == size for r in runs)
            counts[size] = runs[0]["resources"]
            median = lambda key: statistics.median(r[key] for r in runs)
            print(f"{size:>9} {counts[size]:>9} {median('process_s'):>10.2f} {median('import_s'):>9.2f} {median('evaluate_s'):>10.2f}")
    same = len(set(counts.values())) == 1
    print(f"resource count independent of mailbox count: {'yes' if same else 'NO'} ({counts})")


if __name__ == "__main__":
    main()
