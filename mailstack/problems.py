"""Problems found in user input, reported all at once before anything is changed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where it is and what to do about it."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class InputError(Exception):
    """Bad input: one or more problems, each naming what and where.

    Raised before any resource is declared or any file is written, so that
    nothing is changed when the input is wrong.
    """

    def __init__(self, subject: str, problems: list[Problem]):
        self.subject = subject
        self.problems = list(problems)
        super().__init__(self.report())

    def report(self) -> str:
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{self.subject}: {count} {noun}"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)
