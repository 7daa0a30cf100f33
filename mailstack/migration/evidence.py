"""Evidence: what `mailstack verify --record` and `mailstack status --record` measured.

Kept in ``stacks/evidence/<env>.json`` so that the cutover pull request carries
it and the Pulumi program's gates read it. Times are timezone-aware UTC.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from mailstack.files import write_file
from mailstack.problems import InputError, Problem


class Verification(BaseModel):
    """A passing run of every verify check against the new host."""

    model_config = ConfigDict(extra="forbid")
    at: AwareDatetime
    host_name: str
    host_ip: str
    certificate_sha256: str
    checks: list[str] = Field(min_length=1)


class FinalSync(BaseModel):
    """A sync of every mailbox run after the new MX was served."""

    model_config = ConfigDict(extra="forbid")
    at: AwareDatetime
    differences: int = Field(ge=0)


class Evidence(BaseModel):
    """Everything the lifecycle gates decide on; each part is written by the command that measured it."""

    model_config = ConfigDict(extra="forbid")
    verification: Verification | None = None
    previous_mx_ttl: int | None = Field(None, ge=0, description="MX TTL served before the stack lowered it.")
    lowered_ttl_seen_at: AwareDatetime | None = Field(None, description="When every name server first served the lowered TTL.")
    new_mx_first_seen_at: AwareDatetime | None = Field(None, description="When the new MX was first served: starts the overlap clock.")
    old_server_last_mail_at: AwareDatetime | None = Field(None, description="Newest message that reached the old server after the cutover.")
    final_sync: FinalSync | None = None
    backup_at: AwareDatetime | None = None


def evidence_path(project_dir: Path, env: str) -> Path:
    return project_dir / "stacks" / "evidence" / f"{env}.json"


def load_evidence(path: Path) -> Evidence | None:
    """The evidence file, or None when there is none yet; a broken file is an InputError."""
    if not path.exists():
        return None
    try:
        return Evidence.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as exc:
        raise InputError(f"evidence {path}", [Problem(str(path), f"not a valid evidence file: {exc}".splitlines()[0])]) from None



def save_evidence(path: Path, evidence: Evidence) -> None:
    """Write the evidence file atomically (a reviewer reads it in the cutover pull request)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Readable by all: it holds no secret, and it is committed for reviewers.
    write_file(path, evidence.model_dump_json(indent=2, exclude_none=True) + "\n", mode=0o644)


def verification_of(results, host_name: str, host_ip: str, at) -> Verification:
    """The evidence of a passing verify run: when, which host and address, its certificate, every check run."""
    certificate = next(r for r in results if r.check == "certificate")
    return Verification(at=at, host_name=host_name, host_ip=host_ip, certificate_sha256=certificate.facts["sha256"],
                        checks=[r.check for r in results])


def record(path: Path, **parts) -> Evidence:
    """Merge measured parts into the evidence file (other parts are kept) and return the result."""
    evidence = (load_evidence(path) or Evidence()).model_copy(update=parts)
    evidence = Evidence.model_validate(evidence.model_dump())
    save_evidence(path, evidence)
    return evidence
