"""What the commands share that needs no CLI framework: exit codes, usage errors and the inputs of a run.

``mailstack sync`` is built on these alone (argparse, no typer or rich), so
that the run an operator repeats during the overlap starts in a blink; the
other commands get them through :mod:`mailstack.cli.common`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Optional

from mailstack.problems import InputError, Problem

EXIT_OK = 0
EXIT_PROBLEMS = 1  # the input has problems: each printed with where it is and what to do; nothing was changed
EXIT_USAGE = 2  # wrong usage (a bad option)
EXIT_FAILED = 3  # a check failed, or a mailbox is not in sync (not backed up, not imported): each with its reason

EXIT_CODES = ("Exit codes: 0 done; 1 the input has problems (each with where it is and what to do; nothing was "
              "changed); 2 wrong usage; 3 a check failed or a mailbox is not in sync (each with its reason).")

ACCOUNTS_ENV = "MAILSTACK_SYNC_ACCOUNTS"

# The help of the options several commands share, whichever parser shows it.
HELP = {
    "stack": "Stack (environment) name, as in stacks/Pulumi.<env>.yaml.",
    "accounts": "CSV: source_user,source_password,target_user,target_password. Plain passwords: keep it out of git.",
    "source": "Old server, imap:// or imaps://HOST[:PORT]; with -s: the stack's old_server.imap.",
    "cafile": "CA certificates (PEM) to trust for TLS, besides the system's.",
    "include": "Only folders matching this pattern (repeatable; '*' any, '/' between levels).",
    "exclude": "Leave out folders matching this pattern (repeatable).",
    "json": "Print the report as JSON.",
    "max_message_size": "Largest message copied, in MiB: a larger one is reported and left on the old server, never "
                        "held in memory.",
    "deadline": "Stop the whole run after this long (e.g. 90m, 8h); what is not finished is reported so, and the "
                "next run goes on from there.",
    "mailbox_deadline": "Stop one mailbox after this long (e.g. 30m, 6h; 0 for none); reported as not finished.",
    "map_invalid": "Map a folder name the new server refuses ('.' in Dovecot Maildir++, a leading '~', control "
                   "characters) to a look-alike it accepts: 'john.doe' becomes 'john\u2024doe' (ONE DOT LEADER); "
                   "listed in the report.",
}


class UsageError(Exception):
    """A bad option value: exit 2 with the option named (each front end prints it its own way)."""

    def __init__(self, message: str, option: str):
        super().__init__(message)
        self.message, self.option = message, option


def say(text: str, *, stderr: bool = False) -> None:
    """One message as it is, on stdout or stderr (no markup, nothing interpreted)."""
    print(text, file=sys.stderr if stderr else sys.stdout, flush=stderr)


def print_json(data, default=None) -> None:
    """A report as JSON on stdout, indented, written plainly (a highlighter held about 100 KB per mailbox of the
    report: 200 MB and 5 s for 2,000 mailboxes); ``default`` as json.dumps's, for values without a JSON form."""
    say(json.dumps(data, indent=2, ensure_ascii=False, default=default))


def fail(exc: InputError) -> None:
    """Print every problem of the input and exit 1."""
    say(exc.report(), stderr=True)
    raise SystemExit(EXIT_PROBLEMS)


def load_stack(stack: str):
    """A stack's file and roster, validated; exits 1 with every problem."""
    from mailstack.stack.roster import load_roster
    from mailstack.stack.settings import load_stack_file

    try:
        stack_file = load_stack_file(stack)
        settings = stack_file.settings
        roster = load_roster(stack_file.resolve(settings.roster), domains=settings.domains,
                             default_quota=settings.default_quota)
    except InputError as exc:
        fail(exc)
    return stack_file, roster


def imap_endpoint(url: str, cafile: Optional[Path], what: str):
    """An IMAP endpoint from a ``imap[s]://HOST[:PORT]`` option; a bad one is a usage error naming the option."""
    from mailstack.imap.endpoint import parse_endpoint

    try:
        return parse_endpoint(url).trusting(str(cafile) if cafile else None)
    except ValueError as exc:
        raise UsageError(str(exc), what) from None


def read_accounts(path: Optional[Path], roster_addresses: Optional[set[str]] = None, *, source_only: bool = False):
    """The accounts file's valid rows and its problems; exits 1 when no row is usable."""
    from mailstack.sync import accounts as accounts_file

    if path is None:
        raise UsageError(f"give --accounts FILE (or set {ACCOUNTS_ENV})", "--accounts")
    try:
        accounts, problems = accounts_file.read_accounts(path, source_only=source_only)
    except InputError as exc:
        fail(exc)
    if roster_addresses is not None and not source_only:
        kept = []
        for account in accounts:
            if account.target_user.lower() in roster_addresses:
                kept.append(account)
            else:
                problems.append(Problem(account.where, f"target_user {account.target_user!r} is not in the stack's roster"))
        accounts = kept
    if not accounts:
        fail(InputError(f"accounts file {path}", problems or [Problem(str(path), "no account rows")]))
    return accounts, problems


def folder_rules(include: list[str], exclude: list[str], renames: list[str], map_invalid: bool = False):
    """The sync's folder rules from --include/--exclude/--map/--map-invalid; a bad --map is a usage error."""
    from mailstack.sync.plan import FolderRules, parse_rename

    try:
        parsed = tuple(parse_rename(r) for r in renames)
    except ValueError as exc:
        raise UsageError(str(exc), "--map") from None
    return FolderRules(tuple(include) or ("*",), tuple(exclude), parsed, map_invalid)


def record_evidence(stack_file, **parts) -> Path:
    """Fold what was measured into the stack's evidence file (read by the gates)."""
    from mailstack.migration.evidence import evidence_path, record

    path = evidence_path(stack_file.project_dir, stack_file.env)
    record(path, **parts)
    say(f"recorded in {path}", stderr=True)
    return path


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)", re.ASCII)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: Optional[str], option: str) -> Optional[float]:
    """Seconds of a duration option (``90s``, ``30m``, ``6h``, ``1d``; a bare number is seconds); None or 0: none."""
    if text is None:
        return None
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise UsageError(f"{text!r} is not a duration such as 90s, 30m or 6h", option)
    return float(match.group(1)) * _SECONDS[match.group(2)] or None


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mailstack" / "sync"
