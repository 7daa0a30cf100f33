"""Checks of the new host: each one small, each failure with what to do next."""

from __future__ import annotations

import enum
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable


class Status(str, enum.Enum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Result:
    """The outcome of one check: a failure always says how to fix it."""

    check: str
    status: Status
    detail: str
    remedy: str = ""
    facts: dict = field(default_factory=dict, compare=False)

    @property
    def passed(self) -> bool:
        return self.status is not Status.ERROR

    def as_dict(self) -> dict:
        return {"check": self.check, "status": self.status.value, "detail": self.detail, "remedy": self.remedy}


def ok(check: str, detail: str, **facts) -> Result:
    return Result(check, Status.OK, detail, "", facts)


def warning(check: str, detail: str, remedy: str) -> Result:
    return Result(check, Status.WARNING, detail, remedy)


def error(check: str, detail: str, remedy: str) -> Result:
    return Result(check, Status.ERROR, detail, remedy)


@dataclass(frozen=True)
class Target:
    """What to check: the new host, one of its domains, a test mailbox, and where to ask DNS."""

    host: str
    domain: str
    address: str | None = None  # connect here instead of resolving host (tests, rehearsal)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: str | None = None
    dns_server: str | None = None  # IP[:PORT]; None: the system's resolvers
    dkim_selector: str | None = None
    dkim_public_key: str | None = None  # the signer's key (base64 of the DER), to compare with DNS
    mta_sts: bool = False


Check = Callable[[Target], Iterable[Result]]


def remedy_for(exc: Exception) -> str:
    """What to do when a check could not even talk to the host or to DNS."""
    import dns.exception

    if isinstance(exc, dns.exception.DNSException):
        return "the DNS server did not answer: check --dns-server, or the zone's name servers"
    if isinstance(exc, ConnectionRefusedError):
        return "nothing listens there: check the service runs on the host (see the port checks)"
    if isinstance(exc, OSError):
        return "the host is unreachable: check its address, the security group and that it runs"
    return "an unexpected answer: read the detail, then the host's mail log"


def run_checks(checks: Iterable[Check], target: Target, *, jobs: int = 8) -> list[Result]:
    """Run every check in parallel; a check that crashes is an error result, never an exception."""

    def guarded(check: Check) -> list[Result]:
        try:
            return list(check(target))
        except Exception as exc:  # a check must never stop the others
            name = getattr(check, "__name__", "check").replace("_", " ")
            return [error(name, f"could not run: {type(exc).__name__}: {exc}", remedy_for(exc))]

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return [result for results in pool.map(guarded, list(checks)) for result in results]
