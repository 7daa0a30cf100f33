"""Evidence: what `mailstack verify --record`, `mailstack sync -s` and `mailstack status --record` measured.

Kept in ``stacks/evidence/<env>.json`` so that the cutover pull request carries
it and the Pulumi program's gates read it. Times are timezone-aware UTC.

Coverage is recorded per mailbox (the roster's address, lowercase), each with
its own time: a run updates only the mailboxes it covered and keeps the
others, so several partial runs (shards of the accounts file) add up to one
picture the gates can check against the whole roster.
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
    mailboxes: list[str] = Field(default_factory=list, description="Roster addresses whose every folder was compared "
                                                                   "with the old server and matched.")


class FinalSync(BaseModel):
    """Summary of the latest ``mailstack sync -s`` run (the gates read the per-mailbox ``synced``)."""

    model_config = ConfigDict(extra="forbid")
    at: AwareDatetime
    differences: int = Field(ge=0)


class MailboxSync(BaseModel):
    """The latest sync of one mailbox: when, what it still found to do, and whether it ended in sync."""

    model_config = ConfigDict(extra="forbid")
    at: AwareDatetime
    differences: int = Field(ge=0, description="Copies and flag updates made, plus 1 if it did not end in sync.")
    in_sync: bool
    partial: str | None = Field(None, description="Why the run did not cover the whole mailbox (--include, --since).")


class OldServerCheck(BaseModel):
    """When ``mailstack status --record`` last looked at one mailbox on the old server, and what it saw."""

    model_config = ConfigDict(extra="forbid")
    at: AwareDatetime
    newest: AwareDatetime | None = Field(None, description="Newest arrival since the cutover; None: nothing arrived.")


class Rollback(BaseModel):
    """The MX seen back on the old server after a cutover: mail that reached the new host meanwhile is there."""

    model_config = ConfigDict(extra="forbid")
    at: AwareDatetime = Field(description="When status first saw the old MX served again.")
    cutover_at: AwareDatetime = Field(description="When the new MX had first been served.")


class Evidence(BaseModel):
    """Everything the lifecycle gates decide on; each part is written by the command that measured it."""

    model_config = ConfigDict(extra="forbid")
    verification: Verification | None = None
    previous_mx_ttl: int | None = Field(None, ge=0, description="MX TTL served before the stack lowered it.")
    lowered_ttl_seen_at: AwareDatetime | None = Field(None, description="When every name server first served the lowered TTL.")
    new_mx_first_seen_at: AwareDatetime | None = Field(None, description="When the new MX was first served: starts the overlap clock.")
    old_server_last_mail_at: AwareDatetime | None = Field(None, description="Newest message that reached the old server after the cutover.")
    final_sync: FinalSync | None = None
    synced: dict[str, MailboxSync] = Field(default_factory=dict, description="Latest sync per roster address.")
    old_server_checked: dict[str, OldServerCheck] = Field(
        default_factory=dict, description="Latest look at the old server per roster address.")
    rollback: Rollback | None = None
    reverse_synced: dict[str, MailboxSync] = Field(
        default_factory=dict, description="Latest reverse sync (new host back to the old server) per roster address.")
    backup_at: AwareDatetime | None = None


_PER_MAILBOX = ("synced", "old_server_checked", "reverse_synced")


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
    from mailstack.checks.mailboxes import CHECK as MAILBOX_CHECK

    certificate = next(r for r in results if r.check == "certificate")
    compared = next((r.facts.get("addresses", []) for r in results if r.check == MAILBOX_CHECK), [])
    return Verification(at=at, host_name=host_name, host_ip=host_ip, certificate_sha256=certificate.facts["sha256"],
                        checks=[r.check for r in results], mailboxes=compared)


def record(path: Path, **parts) -> Evidence:
    """Merge measured parts into the evidence file (other parts are kept) and return the result.

    The per-mailbox maps (``synced``, ``old_server_checked``, ``reverse_synced``)
    are merged entry by entry: a run replaces only the mailboxes it covered.
    """
    evidence = load_evidence(path) or Evidence()
    for name in _PER_MAILBOX:
        if name in parts:
            parts[name] = {**getattr(evidence, name), **parts[name]}
    evidence = evidence.model_copy(update=parts)
    evidence = Evidence.model_validate(evidence.model_dump())
    save_evidence(path, evidence)
    return evidence
