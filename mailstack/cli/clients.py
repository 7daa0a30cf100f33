"""``mailstack clients``: every employee's mail settings, as sheets to print, Apple profiles and a helpdesk list."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from mailstack.cli.common import EXIT_FAILED, RequiredStackOption, command, err, fail, load_stack, out
from mailstack.problems import InputError, Problem

LANGS = {"ja": ("ja",), "en": ("en",), "both": ("ja", "en")}


def register(app: typer.Typer) -> None:
    command(app, "clients", clients)


def _switch_day(option: Optional[str], stack_file) -> tuple[date | None, list[Problem]]:
    """The switch day from --switch-date, else from the evidence (the day the new MX was first served)."""
    from mailstack.migration.evidence import evidence_path, load_evidence

    if option:
        try:
            return date.fromisoformat(option), []
        except ValueError:
            return None, [Problem("--switch-date", f"{option!r} is not a date: write YYYY-MM-DD, e.g. 2027-01-15")]
    evidence = load_evidence(evidence_path(stack_file.project_dir, stack_file.env))
    if evidence and evidence.new_mx_first_seen_at:
        return evidence.new_mx_first_seen_at.astimezone(timezone.utc).date(), []
    return None, [Problem("--switch-date", "the switch date is not known yet (no new MX in the evidence): "
                                           "give the day the MX moves, --switch-date YYYY-MM-DD")]


def _out_dir_problems(out_dir: Path) -> list[Problem]:
    from mailstack.files import work_tree_of

    tree = work_tree_of(out_dir)
    if tree is not None:
        return [Problem(str(out_dir), f"is inside the git work tree {tree}: sheets hold passwords and must never be "
                                      "committed; choose a directory outside it, e.g. ~/mail-settings")]
    if out_dir.exists() and not out_dir.is_dir():
        return [Problem(str(out_dir), "exists and is not a directory")]
    return []


def clients(
    stack: str = RequiredStackOption,
    out_dir: Path = typer.Option(..., "--out", help="Directory to write to (created 0700); must be outside the git work tree."),
    lang: str = typer.Option("both", "--lang", help="Sheet language: ja, en or both."),
    only: list[str] = typer.Option([], "--only", help="Only this mailbox (repeatable); default: every roster mailbox."),
    with_passwords: bool = typer.Option(False, "--with-passwords",
                                        help="Put generated passwords into the .mobileconfig files and the helpdesk CSV too."),
    switch_date: Optional[str] = typer.Option(None, "--switch-date", help="Day the MX moves (YYYY-MM-DD); "
                                                "default: when the new MX was first served, from the evidence."),
    helpdesk: Optional[str] = typer.Option(None, "--helpdesk", help="Whom employees ask (default: mailstack:admin_email)."),
    pdf: bool = typer.Option(True, "--pdf/--no-pdf", help="Print every sheet to PDF with headless Chromium."),
    jobs: int = typer.Option(4, "--jobs", min=1, max=32, help="Sheets printed at once."),
) -> None:
    """Write every mailbox's settings sheet (HTML, PDF), Apple profile and one helpdesk CSV into --out.

    Generated initial passwords are printed on the sheets when the stack's seed is given in the environment:
    MAILSTACK_PASSWORD_SEED=$(pulumi stack output password_seed --show-secrets -s ENV); without it those
    sheets tell the employee to ask the helpdesk. Every file is written with mode 0600.
    """
    from mailstack.clients.chromium import PrintError, find_chromium
    from mailstack.clients.values import ASK_HELPDESK, GENERATED, mailbox_settings, switch_dates
    from mailstack.stack.passwords import SEED_ENV, seed_problem

    stack_file, roster = load_stack(stack)
    settings = stack_file.settings
    problems: list[Problem] = []
    if lang not in LANGS:
        problems.append(Problem("--lang", f"{lang!r} is not ja, en or both"))
    out_dir = out_dir.expanduser()
    problems += _out_dir_problems(out_dir)
    try:
        day, found = _switch_day(switch_date, stack_file)
    except InputError as exc:
        day, found = None, exc.problems
    problems += found
    by_address = {m.address: m for m in roster}
    wanted = []
    for address in only:
        mailbox = by_address.get(address.strip().lower())
        if mailbox is None:
            problems.append(Problem("--only", f"{address!r} is not a mailbox of the roster {roster.source}"))
        elif mailbox not in wanted:
            wanted.append(mailbox)
    seed = os.environ.get(SEED_ENV) or None
    if seed is not None and seed_problem(seed):
        problems.append(Problem(SEED_ENV, seed_problem(seed)))
    if pdf:
        try:
            find_chromium()
        except PrintError as exc:
            problems.append(Problem("--pdf", str(exc)))
    if problems:
        fail(InputError(f"mailstack clients -s {stack}", problems))

    switch = switch_dates(day, settings.overlap_days)
    values = [mailbox_settings(m, settings, switch, password_seed=seed, helpdesk=helpdesk) for m in (wanted or roster)]
    failures = _write_all(values, out_dir, LANGS[lang], pdf=pdf, jobs=jobs, with_passwords=with_passwords)
    generated = sum(v.password_status == GENERATED for v in values)
    unknown = sum(v.password_status == ASK_HELPDESK for v in values)
    out.print(f"wrote the settings of {len(values)} mailboxes to {out_dir} ({', '.join(LANGS[lang])}"
              f"{', PDF' if pdf else ''}; .mobileconfig; helpdesk.csv); switch {switch.day}, "
              f"old accounts kept until {switch.keep_old_until}", markup=False)
    if generated:
        out.print(f"{generated} sheets carry a generated initial password: hand them out in person, "
                  f"and delete {out_dir} once everyone is set up", markup=False)
    if unknown:
        err.print(f"{unknown} mailboxes have generated passwords but {SEED_ENV} was not set: their sheets say to ask "
                  f"the helpdesk ({SEED_ENV}=$(pulumi stack output password_seed --show-secrets -s {stack}))",
                  markup=False)
    for failure in failures:
        err.print(failure, markup=False)
    if failures:
        raise typer.Exit(EXIT_FAILED)


def _write_all(values, out_dir: Path, langs: tuple[str, ...], *, pdf: bool, jobs: int, with_passwords: bool) -> list[str]:
    """Write every file; returns one message per sheet that could not be printed (the others are written)."""
    from mailstack.clients.chromium import PrintError, print_html
    from mailstack.clients.helpdesk import helpdesk_csv
    from mailstack.clients.mobileconfig import mobileconfig
    from mailstack.clients.sheet import sheet_html
    from mailstack.files import private_dir, write_private

    private_dir(out_dir)
    today = datetime.now(timezone.utc).date()
    pages = []
    for mailbox in values:
        write_private(out_dir / f"{mailbox.address}.mobileconfig", mobileconfig(mailbox, with_password=with_passwords))
        for lang in langs:
            html = sheet_html(mailbox, lang, today)
            write_private(out_dir / f"{mailbox.address}.{lang}.html", html)
            pages.append((out_dir / f"{mailbox.address}.{lang}.pdf", html))
    # With a BOM: Excel, the helpdesk's tool, reads BOM-less CSV as the local code page.
    write_private(out_dir / "helpdesk.csv", helpdesk_csv(values, with_passwords=with_passwords), encoding="utf-8-sig")
    if not pdf:
        return []

    def print_one(page: tuple[Path, str]) -> str | None:
        path, html = page
        try:
            document, _ = print_html(html)
        except PrintError as exc:
            return f"{path}: not printed: {exc}"
        write_private(path, document)
        return None

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return [failure for failure in pool.map(print_one, pages) if failure]
